"""The names a prefix graph reads and writes (export/decoder_graph.py writes them): each
layer's keys and values of the tokens before a row come in as `past.<layer>.key|value` and go
out as `present.<layer>.key|value`, beside `prefix_lengths`, how many tokens came before it.
A leaf module: the session backends (openvino_session.py), the runner (runtime.py) and the
prompt and response calls (prefix.py) all name them."""

PAST = "past."
PRESENT = "present."
PREFIX_LENGTHS = "prefix_lengths"
