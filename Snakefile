# oedal — active learning of GM-NN potentials with optimal experimental design (DESIGN §1, §7).
# Run: snakemake --cores N [--configfile config/<campaign>.yaml]; see README.md.
import os

from snakemake.utils import min_version, validate

from oedal.campaign.plan import validate_campaign

min_version("9.0")


# The default campaign, unless --configfile names another one (Snakemake would otherwise deep-merge
# the two files, and the named campaign would inherit the default's keys).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# Stop before any job on a bad key or value: the pydantic model gives the clearest message (it names
# the key) and types the strings that nested `--config` overrides arrive as; Snakemake then checks
# the typed campaign against the JSON schema generated from the model (`oedal schema`).
CAMPAIGN = validate_campaign(
    config, "config " + ", ".join(map(str, workflow.config_settings.configfiles or ["config/config.yaml"]))
)
validate(CAMPAIGN.model_dump(mode="json"), "workflow/schemas/config.schema.json", set_default=False)


report: "workflow/report/workflow.rst"


# One Snakemake run at a time writes a campaign's results: a second working directory pointed at the same
# results folder stops here, before any job, instead of writing the same outputs and logs at once.
onstart:
    from oedal.files import hold_folder

    hold_folder(f"{CAMPAIGN.results_dir}/{CAMPAIGN.name}", f"the Snakemake run in {os.getcwd()}")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/oracle.smk"
include: "workflow/rules/report.smk"


if CAMPAIGN.exploring:

    include: "workflow/rules/explore.smk"


rule all:
    input:
        final_targets(),
    default_target: True
