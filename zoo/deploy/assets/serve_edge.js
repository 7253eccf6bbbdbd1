// zoo serve's edge (nginx's njs): inference requests pass to Triton unchanged, and Triton's
// answer comes back unchanged, except one correction. Triton 2.51 reports a request it cannot
// parse (malformed JSON; `data` that does not match its `shape`) as an internal error, 500,
// although the fault is the client's. Such answers, and only those, become a 400 with
// Triton's own message. Triton stays the only judge of a request.

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

async function infer(r) {
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
