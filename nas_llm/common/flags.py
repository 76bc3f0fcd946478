"""The values the entry scripts' choice flags accept, in one module without torch.

The entry scripts check their flags against these names, and the SageMaker launchers offer them as
choices without installing torch. Each name is implemented where its stage lives (data.TASKS,
sampling.SAMPLING_STRATEGIES, search_spaces.SEARCH_SPACES, ...); tests/test_launchers.py checks that
every name here has an implementation and every implementation a name.
"""

TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli", "imdb", "swag")
SAMPLING_STRATEGIES = ("standard", "random", "linear_random", "sandwich", "one_shot", "kd", "ats", "none")
DISTILLING_STRATEGIES = ("one_shot", "kd", "ats")  # those a teacher can teach
SEARCH_STRATEGIES = ("random_search", "local_search", "morea", "nsga2", "ehvi")
SEARCH_SPACES = ("small", "smallpower2", "medium", "layer", "layer_block", "large", "uniform", "importance")
REORDER_UNITS = ("none", "importance")
SAMPLING_DISTRIBUTIONS = ("uniform", "params")
SUB_NETWORK_EXECUTIONS = ("slice", "mask")
