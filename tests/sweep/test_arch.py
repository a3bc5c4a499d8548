import pytest

from sweep.arch import MoEArch
from sweep.errors import ConfigError


def flame(**changes):
    fields = dict(num_layers=6, hidden_size=256, num_attention_heads=16, ffn_hidden_size=1368,
                  moe_ffn_hidden_size=176, num_experts=64, moe_router_topk=6,
                  shared_expert_size=352)
    fields.update(changes)
    return MoEArch(**fields)


@pytest.mark.parametrize("changes, field, fix", [
    (dict(num_attention_heads=12), "num_attention_heads", "divides"),
    (dict(moe_router_topk=65), "moe_router_topk", "<= num_experts"),
    (dict(hidden_size=-256), "hidden_size", "> 0"),
    (dict(num_layers=0), "num_layers", "> 0"),
    (dict(first_dense_layers=7), "first_dense_layers", "<= num_layers"),
    (dict(shared_expert_size=-1), "shared_expert_size", ">= 0"),
])
def test_invalid_architectures_name_field_and_fix(changes, field, fix):
    with pytest.raises(ConfigError) as err:
        flame(**changes)
    assert field in str(err.value) and fix in str(err.value)


def test_from_mapping_coerces_plan_csv_strings():
    row = {k: str(v) for k, v in flame().to_dict().items()}
    row["extra_column"] = "ignored"
    assert MoEArch.from_mapping(row) == flame()
    with pytest.raises(ConfigError, match="hidden_size"):
        MoEArch.from_mapping({**row, "hidden_size": "256.5"})
