"""Text that is not Python code of zoo's: the page, the njs edge script, the Triton backend model.py, templates."""
