# oedal — active learning of GM-NN potentials with optimal experimental design (DESIGN §1, §7).
# Run: snakemake --cores N [--configfile config/<campaign>.yaml]; see README.md.
from snakemake.utils import min_version, validate

from oedal.steps import validate_campaign

min_version("9.0")


# The default campaign, unless --configfile names another one (Snakemake would otherwise deep-merge
# the two files, and the named campaign would inherit the default's keys).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# Stop before any job on a bad key or value: the pydantic model gives the clearest message (it names
# the key); the JSON schema generated from it (`oedal schema`) is checked too.
CAMPAIGN = validate_campaign(config)
validate(config, "workflow/schemas/config.schema.json", set_default=False)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/oracle.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_targets(),
    default_target: True
