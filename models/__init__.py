"""NumPyro model files shipped with lktd_ppl (importable as ``lktd_ppl.models``); load one by name,
e.g. ``lktd_ppl.load_model("mlp_q:sarsa_spike_slab")``, or copy it, edit it and load the copy by
path."""
