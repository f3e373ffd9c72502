"""Structured outputs and tool calls, independent of any engine.

- ``grammar``: a JSON schema (from ``response_format`` or a tool's parameters)
  checked and turned into a ``Grammar`` (llguidance's grammar text); a keyword
  that cannot be enforced, an invalid schema or one over the size limit is a
  400 naming it.
- ``decoding``: per engine, the tokenizer llguidance needs and a bounded cache
  of compiled grammars; per sequence, a ``Constraint`` -- the hook every engine
  calls on its sampling path: ``mask_logits(row)`` before a token is drawn,
  ``advance(token)`` after.
- ``tools``: tool definitions, the grammar that forces a call
  (``tool_choice`` required / a named function), the generic tool prompt for
  templates that know no tools, and parsing a reply into ``tool_calls``.

Constrained decoding is llguidance's (see the README for why that library).
"""
