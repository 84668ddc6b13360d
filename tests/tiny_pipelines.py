"""Tiny randomly initialized diffusers pipelines, built from configs and saved
like real checkpoints (save_pretrained), so the generators' loading code runs
for real with nothing downloaded. Sizes follow diffusers' own pipeline tests;
tokenizers are built from in-memory vocabularies (transformers 5)."""
from __future__ import annotations

import string
from pathlib import Path


def _clip_tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for ch in alphabet:
            vocab[ch + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)


def _clip_text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37,
                          layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
                          pad_token_id=1, vocab_size=1000, **extra)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)


def _flag_everything_checker():
    """A tiny safety checker whose thresholds every image crosses."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                  num_attention_heads=4, num_hidden_layers=2)
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                vocab_size=1000)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=text, vision_config=vision,
                                                      projection_dim=16))
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-1.0)
    return checker, CLIPImageProcessor(size={"shortest_edge": 32},
                                       crop_size={"height": 32, "width": 32})


def stable_diffusion(folder: Path, flag_everything: bool = False) -> Path:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    checker, extractor = _flag_everything_checker() if flag_everything else (None, None)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        vae=_vae(), text_encoder=CLIPTextModel(_clip_text_config()), tokenizer=_clip_tokenizer(),
        safety_checker=checker, feature_extractor=extractor, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def stable_diffusion_xl(folder: Path) -> Path:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1)
    config = _clip_text_config(hidden_act="gelu", projection_dim=32)
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config), tokenizer=_clip_tokenizer(),
        tokenizer_2=_clip_tokenizer(), unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear", timestep_spacing="leading"),
        image_encoder=None, feature_extractor=None, add_watermarker=False)
    pipe.save_pretrained(folder)
    return folder


def _if_unet(**extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=[32, 64], down_block_types=["ResnetDownsampleBlock2D",
                                                      "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"], out_channels=6,
        cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=8,
        addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu",
        **extra)


def _if_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         beta_start=0.0001, beta_end=0.02, thresholding=True,
                         dynamic_thresholding_ratio=0.95, sample_max_value=1.0,
                         prediction_type="epsilon", variance_type="learned_range")


def imagen(folder: Path) -> tuple[Path, Path]:
    """(stage I at 8 px, stage II to 16 px)."""
    import torch
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = _t5_tokenizer()
    text = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8,
                                   num_heads=4, num_layers=2, relative_attention_num_buckets=8,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    base = IFPipeline(tokenizer=tokenizer, text_encoder=text,
                      unet=_if_unet(in_channels=3, layers_per_block=1, sample_size=8),
                      scheduler=_if_scheduler(), safety_checker=None, feature_extractor=None,
                      watermarker=None, requires_safety_checker=False)
    sr = IFSuperResolutionPipeline(
        tokenizer=tokenizer, text_encoder=text,
        unet=_if_unet(in_channels=6, layers_per_block=[1, 2], sample_size=16,
                      class_embed_type="timestep", mid_block_scale_factor=1.414,
                      time_embedding_act_fn="gelu", time_embedding_dim=32),
        scheduler=_if_scheduler(),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000,
                                              beta_schedule="squaredcos_cap_v2",
                                              beta_start=0.0001, beta_end=0.02),
        safety_checker=None, feature_extractor=None, watermarker=None,
        requires_safety_checker=False)
    base.save_pretrained(folder / "stage1")
    sr.save_pretrained(folder / "stage2")
    return folder / "stage1", folder / "stage2"


def muse(folder: Path) -> Path:
    import torch
    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = UVit2DModel(
        hidden_size=8, use_bias=False, hidden_dropout=0.0, cond_embed_dim=8,
        micro_cond_encode_dim=2, micro_cond_embed_dim=10, encoder_hidden_size=8, vocab_size=32,
        codebook_size=8, in_channels=8, block_out_channels=8, num_res_blocks=1, downsample=True,
        upsample=True, block_num_heads=1, num_hidden_layers=1, num_attention_heads=1,
        attention_dropout=0.0, intermediate_size=8, layer_norm_eps=1e-06,
        ln_elementwise_affine=True, sample_size=4)
    vqvae = VQModel(act_fn="silu", block_out_channels=[8], down_block_types=["DownEncoderBlock2D"],
                    in_channels=3, latent_channels=8, layers_per_block=1, norm_num_groups=8,
                    num_vq_embeddings=8, out_channels=3, sample_size=8,
                    up_block_types=["UpDecoderBlock2D"], mid_block_add_attention=False,
                    lookup_from_codebook=True)
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=8, intermediate_size=8, layer_norm_eps=1e-05,
        num_attention_heads=1, num_hidden_layers=1, pad_token_id=1, vocab_size=1000,
        projection_dim=8))
    pipe = AmusedPipeline(vqvae=vqvae, tokenizer=_clip_tokenizer(), text_encoder=text,
                          transformer=transformer, scheduler=AmusedScheduler(mask_token_id=31))
    pipe.save_pretrained(folder)
    return folder


def clip_model(folder: Path) -> Path:
    """A tiny CLIP with its processor, for CLIP scores."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    text = dict(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37,
                num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                  num_attention_heads=4, num_hidden_layers=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)) \
        .save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                     crop_size={"height": 32, "width": 32}),
                  tokenizer=_clip_tokenizer()).save_pretrained(folder)
    return folder


def classifier(folder: Path, num_classes: int = 1000) -> Path:
    """A tiny timm ViT over 32 px images, saved as timm saves for the Hub."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                num_classes=num_classes)
    model = timm.create_model("vit_tiny_patch16_224", **args)
    save_for_hf(model, str(folder), model_args=args, safe_serialization=True)
    return folder


def blip2(folder: Path) -> Path:
    """A tiny BLIP-2 (ViT, Q-Former, OPT) with its processor, for the caption stage."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
    )

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "<image>": 3}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[], bos_token="</s>", eos_token="</s>",
                              pad_token="<pad>", unk_token="<unk>")
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, vocab_size=99, encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=len(tokenizer), hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=4, ffn_dim=37,
                         word_embed_proj_dim=32, max_position_embeddings=128, pad_token_id=0,
                         bos_token_id=1, eos_token_id=1),
        num_query_tokens=4, image_token_index=3)
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                   tokenizer=tokenizer, num_query_tokens=4).save_pretrained(folder)
    return folder
