"""What the workflow's rules take from the library (DESIGN §7): their params (:mod:`.params`: exactly the
settings that change each rule's output) and their input functions (:mod:`.inputs`: which files of the
results tree each job reads). The .smk files keep the rules: paths, wildcards, resources, shell lines."""

from oedal.campaign.rules.inputs import RuleInputs
from oedal.campaign.rules.params import RuleParams, environment, model_index, potential_environment

__all__ = ["RuleInputs", "RuleParams", "environment", "model_index", "potential_environment"]
