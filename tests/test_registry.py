"""The generic Registry and the real model registry (zoo.MODELS)."""
import pytest
from conftest import invoke

import zoo
from zoo.errors import DuplicateNameError, UnknownNameError, ZooError
from zoo.registry import LIST_KINDS, Registry

BIREALNETS = ["birealnet18", "birealnet34", "birealnet50", "birealnet101", "birealnet152"]
LARQ_ZOO = [
    "quicknet", "quicknet_small", "quicknet_large", "real_to_binary_net",
    "binary_densenet28", "binary_densenet37", "binary_densenet37_dilated", "binary_densenet45",
    "meliusnet22", "xnornet", "dorefanet", "binary_alexnet", "binary_resnet_e18",
]


@pytest.fixture
def things():
    reg = Registry("thing")
    # registered out of order on purpose: names() must sort them naturally
    for name in ["birealnet101", "birealnet18", "birealnet152", "birealnet34", "birealnet50"]:
        reg.register(name, {"depth": int(name[len("birealnet"):])})
    reg.register("quicknet", {"depth": 0}, aliases=("qnet", "quick_net"))
    return reg


# ---------------------------------------------------------------- generic Registry

def test_register_returns_entry_and_get_finds_it():
    reg = Registry("thing")
    entry = object()
    assert reg.register("a1", entry) is entry
    assert reg.get("a1") is entry
    assert "a1" in reg and len(reg) == 1 and list(reg) == ["a1"]


def test_aliases_resolve_to_the_canonical_entry(things):
    assert things.canonical("qnet") == "quicknet"
    assert things.canonical("quick_net") == "quicknet"
    assert things.get("qnet") is things.get("quicknet")
    assert things.aliases_of("quicknet") == ["qnet", "quick_net"]
    assert things.aliases_of("qnet") == ["qnet", "quick_net"]
    assert "qnet" in things
    # aliases are not extra entries
    assert len(things) == 6
    assert "qnet" not in things.names()


def test_lookup_ignores_case_and_surrounding_space(things):
    assert things.get("  BiRealNet18 ") == {"depth": 18}
    assert things.canonical("QNET") == "quicknet"


@pytest.mark.parametrize(
    "name, aliases",
    [
        ("birealnet18", ()),  # name == existing name
        ("qnet", ()),  # name == existing alias
        ("newthing", ("birealnet34",)),  # alias == existing name
        ("newthing", ("quick_net",)),  # alias == existing alias
    ],
)
def test_duplicates_raise_and_leave_registry_unchanged(things, name, aliases):
    before_names, before_len = things.names(), len(things)
    before_entry = things.get(name) if name in things else None
    with pytest.raises(DuplicateNameError, match="already registered"):
        things.register(name, {"depth": -1}, aliases=aliases)
    assert things.names() == before_names and len(things) == before_len
    assert "newthing" not in things
    if before_entry is not None:
        assert things.get(name) is before_entry
    assert issubclass(DuplicateNameError, ValueError) and issubclass(DuplicateNameError, ZooError)


def test_unknown_name_suggests_closest_matches(things):
    with pytest.raises(UnknownNameError) as info:
        things.get("birealnet81")
    message = str(info.value)
    assert "birealnet81" in message
    assert "Did you mean" in message and "birealnet18" in message
    # plain message (KeyError would wrap it in quotes)
    assert not message.startswith("'")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ZooError)


def test_unknown_name_suggests_aliases_too(things):
    with pytest.raises(UnknownNameError, match="qnet"):
        things.canonical("qnett")


def test_unknown_name_without_close_match_has_no_suggestion(things):
    with pytest.raises(UnknownNameError) as info:
        things.get("zzzzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "thing" in str(info.value)


@pytest.mark.parametrize("bad", ["", "UPPER", "Mixed1", "has space", "a-b", "_lead", "dot.name", "ümlaut"])
def test_invalid_names_are_rejected(bad):
    reg = Registry("thing")
    with pytest.raises(ValueError, match="Invalid thing name"):
        reg.register(bad, 1)
    with pytest.raises(ValueError, match="Invalid thing name"):
        reg.register("good_name", 1, aliases=(bad,))
    assert len(reg) == 0 and "good_name" not in reg


def test_valid_names_accepted():
    reg = Registry("thing")
    for name in ["a", "0net", "net_1", "binary_densenet37_dilated"]:
        reg.register(name, name)
    assert len(reg) == 4


def test_names_are_naturally_sorted(things):
    assert things.names() == [
        "birealnet18", "birealnet34", "birealnet50", "birealnet101", "birealnet152", "quicknet",
    ]
    # iteration uses the same order
    assert list(things) == things.names()
    assert [name for name, _ in things.items()] == things.names()


def test_wildcard_patterns(things):
    assert things.names("birealnet*") == BIREALNETS
    assert things.names("birealnet1*") == ["birealnet18", "birealnet101", "birealnet152"]
    assert things.names("birealnet?") == []
    assert things.names("birealnet??") == ["birealnet18", "birealnet34", "birealnet50"]
    assert things.names("*net") == ["quicknet"]
    assert things.names("QUICK*") == ["quicknet"]  # patterns are lowercased
    assert things.names("nothing*") == []
    # aliases never match a pattern
    assert things.names("qnet") == []


def test_exclude(things):
    assert things.names("*", exclude="birealnet1*") == ["birealnet34", "birealnet50", "quicknet"]
    assert things.names("birealnet*", exclude="*5*") == ["birealnet18", "birealnet34", "birealnet101"]
    assert things.names(exclude="*") == []


def test_register_model_decorator_on_a_private_registry():
    reg = Registry("model")

    @zoo.register_model("tinynet", aliases=("tiny",), registry=reg, family="test",
                        paper=zoo.Paper("1234.56789", "Tiny"), min_input_size=8)
    def tinynet(**kwargs):
        """A tiny net.

        More text.
        """
        return kwargs

    entry = reg.get("tiny")
    assert entry.name == "tinynet" and entry.family == "test" and entry.min_input_size == 8
    assert entry.description == "A tiny net."
    assert entry.paper.url == "https://arxiv.org/abs/1234.56789"
    assert tinynet.zoo_entry is entry
    assert entry(num_classes=3) == {"num_classes": 3}
    assert "tinynet" not in zoo.MODELS


# ---------------------------------------------------------------- the real model registry

def test_list_models_contains_all_families():
    names = zoo.list_models()
    missing = [n for n in BIREALNETS + LARQ_ZOO if n not in names]
    assert not missing
    assert names == sorted(set(names), key=names.index)  # no duplicates
    assert zoo.list_models("birealnet*") == BIREALNETS
    assert zoo.list_models("binary_densenet*") == [
        "binary_densenet28", "binary_densenet37", "binary_densenet37_dilated", "binary_densenet45",
    ]
    assert "birealnet" not in names  # aliases are not listed
    assert zoo.list_models("quicknet*", exclude="*_*") == ["quicknet"]


def test_birealnet_alias():
    assert zoo.get_entry("birealnet").name == "birealnet18"
    assert zoo.get_entry("birealnet") is zoo.get_entry("birealnet18")
    assert zoo.MODELS.aliases_of("birealnet18") == ["birealnet"]


def test_register_model_duplicate_name_raises():
    original = zoo.get_entry("birealnet18")
    with pytest.raises(DuplicateNameError):
        @zoo.register_model("birealnet18")
        def fake(**kwargs):
            return None
    with pytest.raises(DuplicateNameError):
        @zoo.register_model("some_brand_new_name", aliases=("birealnet",))
        def fake2(**kwargs):
            return None
    assert zoo.get_entry("birealnet18") is original
    assert "some_brand_new_name" not in zoo.MODELS


def test_unknown_model_name_suggests():
    with pytest.raises(UnknownNameError, match="birealnet18"):
        zoo.get_entry("birealnet81")


def test_info_birealnet18():
    record = zoo.info("birealnet18")
    assert record["name"] == "birealnet18"
    assert record["aliases"] == ["birealnet"]
    assert record["paper"]["arxiv"] == "1808.00278"
    assert record["paper"]["url"] == "https://arxiv.org/abs/1808.00278"
    assert record["input_size"] == [224, 224, 3]
    costs = record["costs"]
    assert costs["input_shape"] == [224, 224, 3]
    assert costs["params"] == 11699112
    # Bi-Real Net-18 paper: 1.63e8 OPs (1.68e9 BOPs / 64 + 1.39e8 FLOPs)
    assert costs["ops"] == pytest.approx(1.63e8, rel=0.02)
    assert costs["binary_macs"] == pytest.approx(1.68e9, rel=0.02)
    assert costs["float_macs"] == pytest.approx(1.39e8, rel=0.02)
    assert costs["ops"] == pytest.approx(costs["float_macs"] + costs["binary_macs"] / 64)
    assert costs["real_params"] == costs["params"] - costs["binary_params"]
    assert 0.9 < costs["binary_params"] / costs["params"] < 1.0


def test_info_birealnet34():
    record = zoo.info("birealnet34")
    assert record["paper"]["arxiv"] == "1808.00278"
    assert record["costs"]["ops"] == pytest.approx(1.93e8, rel=0.02)
    assert record["costs"]["binary_macs"] == pytest.approx(3.53e9, rel=0.02)


def test_info_of_supernets_says_costs_are_not_meaningful():
    """Generated (PruningNet) and masked (supernet) kernels are not counted: no partial number."""
    from zoo.cli import cli

    supernets = [n for n in zoo.list_models() if zoo.get_entry(n).extra.get("supernet")]
    assert {"spos_supernet", "pruningnet_mobilenet_v1", "pruningnet_mobilenet_v2"} <= set(supernets)
    for name in supernets:
        record = zoo.info(name)
        assert record["costs"] is None and record["costs_note"].startswith("not meaningful"), name
    result = invoke(cli, "info", "pruningnet_mobilenet_v1")
    assert result.exit_code == 0 and "costs:            not meaningful" in result.stdout
    assert "params:" not in result.stdout and "float MACs" not in result.stdout


def test_info_of_the_released_metapruning_net_prints_the_papers_flops():
    from zoo.cli import cli

    result = invoke(cli, "info", "metapruning_mobilenet_v1_0_75")
    assert result.exit_code == 0, result.output
    line = next(l for l in result.stdout.splitlines() if l.strip().startswith("FLOPs (release)"))
    flops = float(line.split(":", 1)[1].split("M")[0]) * 1e6
    assert flops == pytest.approx(316e6, rel=0.01)  # README: 316M; 315.6M
    assert "imagenet2012 top-1 70.9%" in result.stdout


def test_info_without_costs():
    record = zoo.info("quicknet", costs=False)
    assert "costs" not in record
    assert record["paper"]["arxiv"] == "2011.09398"
    assert record["family"] == "larq_zoo"


@pytest.mark.parametrize("kind", sorted(LIST_KINDS))
def test_unknown_name_hint_names_the_cli_kind(kind):
    """The hint is a command that works: `zoo list --kind` takes the plural names."""
    from zoo.cli import cli

    with pytest.raises(UnknownNameError) as error:
        Registry(kind).canonical("nothing_like_it")
    command = str(error.value).split("`")[1]
    assert command.startswith("zoo list")
    args = command.split()[2:]
    result = invoke(cli, "list", *args, "--format", "json")
    assert result.exit_code == 0, result.output
