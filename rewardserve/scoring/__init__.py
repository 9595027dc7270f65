"""The scoring core: a request's sequences to their scores, with no transport in it. HTTP
(`service/`), and whatever else scores, call the same stages, in the order the data flows:

    validate.py    what to score -> Inputs (field paths; item, text, step and objective limits)
    admit.py       a permit for their sequences (503 and 429 are decided there)
    retemplate.py  policy-formatted text -> the conversation it spells
    tokenize.py    texts and conversations -> token ids (bundle/formatting.py)
    batcher.py     sequences from every caller, re-batched by length, cached, deduplicated
                   (cache.py, gathered.py; shared_prompts.py keeps prompts' keys and values)
    engine.py      a padded batch through the bundle's runtime, and fault recovery

beside what they share: errors.py (one hierarchy, each error with the status a transport
answers), metrics.py and monitoring.py (Prometheus), threads.py (the engine thread's priority).
Never imports torch, transformers or a web framework.
"""
