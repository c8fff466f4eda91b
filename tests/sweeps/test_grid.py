"""Grid and --set parsing, slugs and labels of settings."""

import pytest

from lit_align.sweeps.grid import SweepError, config_axis, name_axes, parse_grid, parse_set, safe_slug, settings

BETA = "model.init_args.loss.init_args.beta"
RULE = "model.init_args.loss.init_args.rule"


def test_values_keep_the_text_as_written():
    axis = parse_grid(f"{BETA}=[0.05, 0.10, 1e-3]")
    assert axis.key == BETA and axis.name == "beta"
    assert [v.text for v in axis.values] == ["0.05", "0.10", "1e-3"]
    assert [v.slug for v in axis.values] == ["0.05", "0.10", "1e-3"]


def test_null_and_structured_values():
    axis = parse_grid("x.y=[null, {a: 1, b: two}, [1, 2]]")
    assert [v.text for v in axis.values] == ["null", '{"a":1,"b":"two"}', "[1,2]"]
    assert [v.slug for v in axis.values] == ["null", "a-1-b-two", "1-2"]


def test_class_paths_are_named_by_their_last_component():
    axis = parse_grid(
        f"{RULE}=[lit_align.losses.beta_rules.FixedBeta, "
        "{class_path: lit_align.losses.beta_rules.BatchAdaptiveBeta, init_args: {alpha: 0.6}}]"
    )
    assert [v.slug for v in axis.values] == ["FixedBeta", "BatchAdaptiveBeta"]
    assert axis.values[0].text == "lit_align.losses.beta_rules.FixedBeta"
    assert axis.values[1].text.startswith('{"class_path":"lit_align.losses.beta_rules.BatchAdaptiveBeta"')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("beta", "expected KEY=\\[v1,v2"),
        ("=[1]", "expected KEY="),
        ("beta=0.1", "must be a list in brackets"),
        ("beta=[]", "the list is empty"),
        ("beta=[0.1, 0.2", "not valid YAML"),
        ("beta=[0.1, 0.1]", "0.1 appears more than once"),
        ("1beta=[1]", "not a dotted setting name"),
        ("seed_everything=[1, 2]", "use --seeds"),
        ("trainer.logger.init_args.name=[a]", "sets trainer.logger.init_args.name itself"),
    ],
)
def test_bad_grids_name_the_text(text, message):
    with pytest.raises(SweepError, match=message) as error:
        parse_grid(text)
    assert f"--grid {text!r}" in str(error.value)


def test_config_axis_slugs_and_labels():
    axis = parse_grid("config=[configs/beta_dpo/quickstart.yaml, configs/quickstart/dpo.yaml]")
    assert axis.is_config
    assert [v.slug for v in axis.values] == ["beta_dpo-quickstart", "quickstart-dpo"]
    assert [v.label for v in axis.values] == ["beta_dpo/quickstart", "quickstart/dpo"]


def test_caller_labels_replace_the_axis_label():
    axis = config_axis(["configs/quickstart/dpo.yaml"], {"configs/quickstart/dpo.yaml": "DPO"})
    (setting,) = settings([axis])
    assert setting.label == "DPO" and setting.slug == "quickstart-dpo"


def test_settings_are_the_product_with_slugs_and_labels():
    beta = parse_grid(f"{BETA}=[0.05,0.1]")
    rule = parse_grid(f"{RULE}=[lit_align.losses.beta_rules.FixedBeta, lit_align.losses.beta_rules.FusionBeta]")
    product = settings([beta, rule])
    assert len(product) == 4
    assert product[0].slug == "beta-0.05_rule-FixedBeta"
    assert product[0].label == "beta=0.05, rule=FixedBeta"
    assert product[3].slug == "beta-0.1_rule-FusionBeta"
    assert product[3].values[BETA].text == "0.1"


def test_no_axes_is_one_setting():
    (setting,) = settings([])
    assert setting.slug == "base" and setting.values == {}


def test_colliding_slugs_are_numbered_in_order():
    axis = parse_grid("x.y=['a b', 'a/b', a-b]")
    assert [s.slug for s in settings([axis])] == ["y-a-b", "y-a-b-2", "y-a-b-3"]


def test_axes_with_the_same_last_name_get_longer_names():
    axes = name_axes([parse_grid("model.beta=[1]"), parse_grid("data.beta=[2]"), parse_grid("x.lr=[3]")])
    assert [a.name for a in axes] == ["model.beta", "data.beta", "lr"]
    with pytest.raises(SweepError, match="more than once"):
        name_axes([parse_grid("x.lr=[1]"), parse_grid("x.lr=[2]")])


def test_safe_slug():
    assert safe_slug("a b/c:d") == "a-b-c-d"
    assert safe_slug("///") == "value"
    assert (safe_slug("-1"), safe_slug("1"), safe_slug("-x")) == ("-1", "1", "x")
    assert len(safe_slug("x" * 100)) == 48


def test_parse_set():
    assert parse_set("trainer.max_steps=20") == ("trainer.max_steps", "20")
    assert parse_set("trainer.callbacks=[]") == ("trainer.callbacks", "[]")
    assert parse_set("data.guidance_text=a=b") == ("data.guidance_text", "a=b")
    with pytest.raises(SweepError, match="--set 'max_steps': expected KEY=VALUE"):
        parse_set("max_steps")
    with pytest.raises(SweepError, match="use --seeds"):
        parse_set("seed_everything=3")
