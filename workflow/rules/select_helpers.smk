# Helpers of the rules in select.smk (input functions, flags); shared ones live in common.smk.


def select_inputs(wildcards) -> dict:
    """The pool and its scores; random runs read no scores (`oedal select --method random` takes the
    pool ids from pool.h5) and exclude the training set by ``--exclude train.h5`` instead."""
    here = iter_dir(wildcards, iteration(wildcards))
    files = {"pool": f"{here}/pool.h5"}
    if parse_strategy(wildcards.strategy).score is None:
        files["train"] = f"{here}/train.h5"
    else:
        files["scores"] = f"{here}/scores.h5"
    return files
