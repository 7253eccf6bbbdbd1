// zoo serve's edge (nginx's njs): inference requests pass to Triton unchanged, and Triton's
// answer comes back unchanged, except one correction. Triton 2.51 reports a request it cannot
// parse (malformed JSON; `data` that does not match its `shape`) as an internal error, 500,
// although the fault is the client's. Such answers, and only those, become a 400 with
// Triton's own message.
//
// Before that, what Triton must never see is refused here with a 400, before it allocates
// anything: a body that is not JSON by the standard (Triton reads NaN and Infinity literals,
// and answers NaN in a body that is not JSON either), and a shape that does not fit the data
// the request carries (Triton 2.51 sizes its buffers from `shape`: [1, 2147483647] took 12 s
// and 8 GB, [2**40, 8, 8] aborted the server). Every dim must be a non-negative integer, and
// their product the number of values in `data` (JSON) or at most the bytes of a binary body.

const PARSE_ERROR = /^(failed to parse|unable to parse)/i;
const PASSED_HEADERS = ["Content-Type", "Inference-Header-Content-Length"];

function clientFault(reply) {
    if (reply.status !== 500) {
        return false;
    }
    try {
        return PARSE_ERROR.test(JSON.parse(reply.responseText).error || "");
    } catch (e) {
        return false;  // not Triton's JSON error: leave it as it is
    }
}

const MAX_DEPTH = 16;

function countValues(data, depth) {  // the values of a (nested) JSON array; -1 if too deep
    if (!Array.isArray(data)) {
        return 1;
    }
    if (depth > MAX_DEPTH) {
        return -1;
    }
    var n = 0;
    for (var i = 0; i < data.length; i++) {
        var k = countValues(data[i], depth + 1);
        if (k < 0) {
            return -1;
        }
        n += k;
    }
    return n;
}

function shapeProblem(input, binaryBytes) {
    var shape = input.shape;
    var name = JSON.stringify(String(input.name));
    if (!Array.isArray(shape) || shape.length > MAX_DEPTH) {
        return "unable to parse 'shape' of input " + name + ": expected a list of at most " + MAX_DEPTH + " dims";
    }
    var product = 1;
    for (var i = 0; i < shape.length; i++) {
        var d = shape[i];
        if (typeof d !== "number" || !Number.isInteger(d) || d < 0 || d > 2147483647) {
            return "unable to parse 'shape' of input " + name + ": " + JSON.stringify(shape) + " has a dim that is not an integer in [0, 2147483647]";
        }
        product *= d;
    }
    if (input.data !== undefined) {
        var n = countValues(input.data, 0);
        if (n !== product) {
            return "unable to parse 'data' of input " + name + ": shape " + JSON.stringify(shape) + " holds " + product + " values, but 'data' carries "
                + (n < 0 ? "a list nested too deeply" : n);
        }
    } else if (product > binaryBytes) {
        return "unable to parse the binary data of input " + name + ": shape " + JSON.stringify(shape) + " holds " + product
            + " values, more than the request's " + binaryBytes + " bytes";
    }
    return null;
}

function requestProblem(r) {  // why the request must not reach Triton, or null
    var body = r.requestBuffer || "";
    var headerLength = r.headersIn["Inference-Header-Content-Length"];
    var jsonPart = headerLength === undefined ? body : body.slice(0, Number(headerLength));
    var request;
    try {
        request = JSON.parse(jsonPart.toString());  // standard JSON: NaN and Infinity are errors
    } catch (e) {
        return "failed to parse the request JSON buffer: not valid JSON (" + e.message + "); NaN and Infinity are not JSON numbers";
    }
    var inputs = request && request.inputs;
    if (!Array.isArray(inputs)) {
        return null;  // Triton names what is missing
    }
    var binaryBytes = body.length - jsonPart.length;
    for (var i = 0; i < inputs.length; i++) {
        var problem = inputs[i] && typeof inputs[i] === "object" ? shapeProblem(inputs[i], binaryBytes) : null;
        if (problem) {
            return problem;
        }
    }
    return null;
}

async function infer(r) {
    var problem = r.method === "POST" ? requestProblem(r) : null;
    if (problem) {
        r.headersOut["Content-Type"] = "application/json";
        r.return(400, JSON.stringify({error: problem}));
        return;
    }
    // the subrequest carries this request's body and headers
    const reply = await r.subrequest("/_zoo_triton" + r.uri, {method: r.method, args: r.variables.args || ""});
    PASSED_HEADERS.forEach(function (name) {  // (njs 0.7 has no for-of)
        if (reply.headersOut[name] !== undefined) {
            r.headersOut[name] = reply.headersOut[name];
        }
    });
    r.return(clientFault(reply) ? 400 : reply.status, reply.responseBuffer);
}

export default {infer};
