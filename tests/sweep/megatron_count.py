"""Build megatron-core's GPTModel on CPU for each architecture given as JSON; print param counts.

Run as a subprocess by test_megatron_count.py: it patches torch.cuda and starts a gloo process
group, which must not leak into the test process.
"""

import json
import sys
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def build_and_count(arch: dict) -> int:
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    dense = arch["first_dense_layers"]
    config = TransformerConfig(
        num_layers=arch["num_layers"], hidden_size=arch["hidden_size"],
        num_attention_heads=arch["num_attention_heads"], ffn_hidden_size=arch["ffn_hidden_size"],
        moe_ffn_hidden_size=arch["moe_ffn_hidden_size"], num_moe_experts=arch["num_experts"],
        moe_router_topk=arch["moe_router_topk"],
        moe_shared_expert_intermediate_size=arch["shared_expert_size"] or None,
        moe_layer_freq=[0] * dense + [1] * (arch["num_layers"] - dense),
        # allgather: alltoall creates a CUDA stream at construction
        moe_token_dispatcher_type="allgather", moe_grouped_gemm=False, moe_router_pre_softmax=True,
        # no weight init: a count needs the shapes only (2 s of CPU for the 73M FLAME shape)
        use_cpu_initialization=True, perform_initialization=False, add_bias_linear=False,
        gated_linear_unit=True, activation_func=F.silu, normalization="RMSNorm",
        bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        bias_dropout_fusion=False, apply_rope_fusion=False)
    spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False,
                                      normalization="RMSNorm")
    model = GPTModel(config=config, transformer_layer_spec=spec, vocab_size=arch["vocab_size"],
                     max_sequence_length=arch["seq_length"], position_embedding_type="rope",
                     share_embeddings_and_output_weights=arch["tie_embeddings"])
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.cuda.current_device = lambda: "cpu"  # RoPE and attention buffers ask for a device
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    from megatron.core import parallel_state
    parallel_state.initialize_model_parallel(1, 1, expert_model_parallel_size=1)
    archs = json.loads(sys.argv[1])
    print(json.dumps([build_and_count(a) for a in archs]))


if __name__ == "__main__":
    main()
