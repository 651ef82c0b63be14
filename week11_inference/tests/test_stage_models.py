"""The weeks-7–9 models stage on a tiny Llama export: a row with tokens/s and answers per folder, a SKIP row naming
the command for a missing one."""

import torch

from week11_inference.stage_models import StageModelsConfig, stage_models_rows


def _tiny_export(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "user", "assistant", ":", "hi", "there", "what", "is", "?"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}assistant :"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=1, pad_token_id=1))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def test_rows_for_present_and_missing_exports(tmp_path):
    _tiny_export(tmp_path / "week07" / "sft-v1")
    cfg = StageModelsConfig(models=["week07/sft-v1", "week09/dpo"], prompts=["what is there ?", "hi"], new_tokens=5)
    ran, missing = stage_models_rows(cfg, tmp_path)
    assert ran["status"] == "ok"
    assert len(ran["answers"]) == 2
    assert 0 < ran["new_tokens"] <= 10
    assert ran["tokens_per_sec"] > 0
    assert missing["status"] == "SKIP"
    assert "make week09 PROFILE=cpu" in missing["reason"]
