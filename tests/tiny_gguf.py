"""The tiny test model as a GGUF, for the llamacpp backend: the same weights, tokenizer and template.

``build_tiny_gguf`` writes the tiny Qwen2 model that ``tests.tiny_model``
made (safetensors and tokenizer.json) into one GGUF file with the ``gguf``
package, as llama.cpp's ``convert_hf_to_gguf.py`` lays out a Qwen2 model:
architecture ``qwen2``, float32 tensors under llama.cpp's names, the
byte-level BPE vocabulary with its merges, the special tokens and the chat
template. Being the same model, the two backends can be checked against each
other on it (the same label probabilities, to float rounding).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["build_tiny_gguf"]

TOKEN_NORMAL, TOKEN_CONTROL = 1, 3  # gguf.TokenType values
_LAYER_TENSORS = {  # HF name after "model.layers.N." -> llama.cpp name after "blk.N."
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def build_tiny_gguf(model_dir: Path, out_path: Path) -> Path:
    """Write ``model_dir`` (a tiny model from ``tests.tiny_model``) as the GGUF ``out_path``."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    vocab = tokenizer["model"]["vocab"]
    specials = {t["id"]: t["content"] for t in tokenizer["added_tokens"]}
    tokens = [""] * config["vocab_size"]
    for text, index in vocab.items():
        tokens[index] = text
    for index, text in specials.items():
        tokens[index] = text
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in tokenizer["model"]["merges"]]

    writer = gguf.GGUFWriter(str(out_path), "qwen2")
    writer.add_name(model_dir.name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the tiny tokenizer splits with GPT-2's regex (ByteLevel, use_regex)
    writer.add_token_list(tokens)
    writer.add_token_types([TOKEN_CONTROL if i in specials else TOKEN_NORMAL for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)

    weights = load_file(str(model_dir / "model.safetensors"))
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])
    for layer in range(config["num_hidden_layers"]):
        for hf_name, gguf_name in _LAYER_TENSORS.items():
            writer.add_tensor(f"blk.{layer}.{gguf_name}", weights[f"model.layers.{layer}.{hf_name}"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path
