"""ctypes declarations of the part of llama.cpp's C API that ``llamacpp_runtime`` uses.

The library is the one prebuilt in the pinned ``xllamacpp`` wheel (llama.cpp b11549); we use only its C
symbols, never its Python module. The structs are copied from that tag's ``llama.h`` and ``ggml.h``: a
new pin means checking them against its header (``tests/fast/test_llamacpp.py`` checks the defaults).
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

from engine.errors import ModelUnavailable

__all__ = ["LlamaApi", "load_api", "library_path"]

LIBRARY_PACKAGE = "xllamacpp"  # the wheel that carries the library (requirements.txt pins its version)

llama_token = ctypes.c_int32
llama_pos = ctypes.c_int32
llama_seq_id = ctypes.c_int32
c_void_p, c_char_p, c_bool, c_int32, c_uint32, c_float, c_size_t = (
    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool, ctypes.c_int32, ctypes.c_uint32, ctypes.c_float, ctypes.c_size_t)

LLAMA_LOAD_MODE_NONE = 0
LLAMA_POOLING_TYPE_NONE = 0
GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR = 3, 4
LLAMA_MAX_SEQ = 256  # src/llama-cparams.h: the most sequences a context takes (not exported)
GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64

# typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data);
log_callback = ctypes.CFUNCTYPE(None, ctypes.c_int, c_char_p, c_void_p)
# typedef bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data);
eval_callback = ctypes.CFUNCTYPE(c_bool, c_void_p, c_bool, c_void_p)
progress_callback = ctypes.CFUNCTYPE(c_bool, c_float, c_void_p)
abort_callback = ctypes.CFUNCTYPE(c_bool, c_void_p)


class llama_model_params(ctypes.Structure):
    _fields_ = [
        ("devices", c_void_p),
        ("tensor_buft_overrides", c_void_p),
        ("n_gpu_layers", c_int32),
        ("split_mode", ctypes.c_int),
        ("load_mode", ctypes.c_int),
        ("lazy_mode", ctypes.c_int),
        ("main_gpu", c_int32),
        ("tensor_split", c_void_p),
        ("progress_callback", c_void_p),
        ("progress_callback_user_data", c_void_p),
        ("kv_overrides", c_void_p),
        ("vocab_only", c_bool),
        ("check_tensors", c_bool),
        ("use_extra_bufts", c_bool),
        ("no_host", c_bool),
        ("no_alloc", c_bool),
        ("load_mtp", c_bool),
    ]


class llama_context_params(ctypes.Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_seq_max", c_uint32),
        ("n_rs_seq", c_uint32),
        ("n_outputs_max", c_uint32),
        ("n_outputs_max_per_seq", c_uint32),
        ("n_threads", c_int32),
        ("n_threads_batch", c_int32),
        ("ctx_type", ctypes.c_int),
        ("rope_scaling_type", ctypes.c_int),
        ("pooling_type", ctypes.c_int),
        ("attention_type", ctypes.c_int),
        ("flash_attn_type", ctypes.c_int),
        ("rope_freq_base", c_float),
        ("rope_freq_scale", c_float),
        ("yarn_ext_factor", c_float),
        ("yarn_attn_factor", c_float),
        ("yarn_beta_fast", c_float),
        ("yarn_beta_slow", c_float),
        ("yarn_orig_ctx", c_uint32),
        ("defrag_thold", c_float),
        ("cb_eval", eval_callback),
        ("cb_eval_user_data", c_void_p),
        ("type_k", ctypes.c_int),
        ("type_v", ctypes.c_int),
        ("moe_cache_size", c_size_t),
        ("abort_callback", abort_callback),
        ("abort_callback_data", c_void_p),
        ("embeddings", c_bool),
        ("offload_kqv", c_bool),
        ("no_perf", c_bool),
        ("op_offload", c_bool),
        ("swa_full", c_bool),
        ("kv_unified", c_bool),
        ("samplers", c_void_p),
        ("n_samplers", c_size_t),
        ("ctx_other", c_void_p),
    ]


class llama_batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", c_int32),
        ("token", ctypes.POINTER(llama_token)),
        ("embd", ctypes.POINTER(c_float)),
        ("pos", ctypes.POINTER(llama_pos)),
        ("n_seq_id", ctypes.POINTER(c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(llama_seq_id))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]


class ggml_tensor(ctypes.Structure):
    """The head of ``struct ggml_tensor`` up to its name and data: what an eval callback reads."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", c_int32),
        ("src", c_void_p * GGML_MAX_SRC),
        ("view_src", c_void_p),
        ("view_offs", c_size_t),
        ("data", c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
    ]


# name: (result type, argument types)
_FUNCTIONS = {
    "llama_backend_init": (None, []),
    "llama_log_set": (None, [log_callback, c_void_p]),
    "llama_model_default_params": (llama_model_params, []),
    "llama_context_default_params": (llama_context_params, []),
    "llama_model_load_from_file": (c_void_p, [c_char_p, llama_model_params]),
    "llama_model_free": (None, [c_void_p]),
    "llama_init_from_model": (c_void_p, [c_void_p, llama_context_params]),
    "llama_free": (None, [c_void_p]),
    "llama_get_memory": (c_void_p, [c_void_p]),
    "llama_model_get_vocab": (c_void_p, [c_void_p]),
    "llama_model_n_embd": (c_int32, [c_void_p]),
    "llama_model_n_layer": (c_int32, [c_void_p]),
    "llama_model_meta_val_str": (c_int32, [c_void_p, c_char_p, c_char_p, c_size_t]),
    "llama_model_desc": (c_int32, [c_void_p, c_char_p, c_size_t]),
    "llama_vocab_n_tokens": (c_int32, [c_void_p]),
    "llama_vocab_bos": (llama_token, [c_void_p]),
    "llama_vocab_eos": (llama_token, [c_void_p]),
    "llama_vocab_eot": (llama_token, [c_void_p]),
    "llama_vocab_is_eog": (c_bool, [c_void_p, llama_token]),
    "llama_vocab_get_text": (c_char_p, [c_void_p, llama_token]),
    "llama_tokenize": (c_int32, [c_void_p, c_char_p, c_int32, ctypes.POINTER(llama_token), c_int32, c_bool, c_bool]),
    "llama_detokenize": (c_int32, [c_void_p, ctypes.POINTER(llama_token), c_int32, c_char_p, c_int32, c_bool,
                                   c_bool]),
    "llama_batch_init": (llama_batch, [c_int32, c_int32, c_int32]),
    "llama_batch_free": (None, [llama_batch]),
    "llama_decode": (c_int32, [c_void_p, llama_batch]),
    "llama_set_embeddings": (None, [c_void_p, c_bool]),
    "llama_get_logits_ith": (ctypes.POINTER(c_float), [c_void_p, c_int32]),
    "llama_get_embeddings_ith": (ctypes.POINTER(c_float), [c_void_p, c_int32]),
    "llama_memory_seq_rm": (c_bool, [c_void_p, llama_seq_id, llama_pos, llama_pos]),
    "llama_memory_seq_cp": (None, [c_void_p, llama_seq_id, llama_seq_id, llama_pos, llama_pos]),
    "llama_memory_clear": (None, [c_void_p, c_bool]),
    "llama_state_seq_get_size": (c_size_t, [c_void_p, llama_seq_id]),
    "llama_state_seq_get_data": (c_size_t, [c_void_p, ctypes.POINTER(ctypes.c_uint8), c_size_t, llama_seq_id]),
    "llama_state_seq_set_data": (c_size_t, [c_void_p, ctypes.POINTER(ctypes.c_uint8), c_size_t, llama_seq_id]),
    "llama_state_seq_save_file": (c_size_t, [c_void_p, c_char_p, llama_seq_id, ctypes.POINTER(llama_token), c_size_t]),
    "llama_state_seq_load_file": (c_size_t, [c_void_p, c_char_p, llama_seq_id, ctypes.POINTER(llama_token), c_size_t,
                                             ctypes.POINTER(c_size_t)]),
}


class LlamaApi:
    """The library's functions as attributes (``api.llama_decode(...)``), with their C types set, and the
    types and constants the runtime needs beside them."""

    llama_token = llama_token
    llama_batch = llama_batch
    ggml_tensor = ggml_tensor
    log_callback = log_callback
    eval_callback = eval_callback
    LLAMA_LOAD_MODE_NONE = LLAMA_LOAD_MODE_NONE
    LLAMA_POOLING_TYPE_NONE = LLAMA_POOLING_TYPE_NONE
    LLAMA_MAX_SEQ = LLAMA_MAX_SEQ

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.library = library  # for a benchmark that declares more of the API (bench/peer.py)
        for name, (result, arguments) in _FUNCTIONS.items():
            function = getattr(library, name)
            function.restype, function.argtypes = result, arguments
            setattr(self, name, function)


_api: LlamaApi | None = None


def library_path() -> Path | None:
    """The llama.cpp library inside the installed ``xllamacpp`` wheel (found, not loaded), or ``None``."""
    spec = importlib.util.find_spec(LIBRARY_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("xllamacpp*.so"))
        if found:
            return found[0]
    return None


def load_api() -> LlamaApi:
    """The loaded library (once per process), or ``ModelUnavailable`` saying how to install it."""
    global _api
    if _api is None:
        path = library_path()
        if path is None:
            raise ModelUnavailable(f"The llamacpp backend needs the {LIBRARY_PACKAGE} package (llama.cpp, prebuilt); "
                                   "`make setup` installs it from requirements.txt. Or start with --backend torch.")
        try:
            _api = LlamaApi(ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL), path)
        except (OSError, AttributeError) as exc:  # a library this machine cannot load, or one without a symbol
            raise ModelUnavailable(f"Cannot load llama.cpp from {path}: {exc}. Start with --backend torch.") from None
    return _api
