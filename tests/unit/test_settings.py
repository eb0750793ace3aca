"""Settings: one typed place, the original service's variable names honoured."""

from __future__ import annotations

from gateway.runtime.checkpoints import DEFAULT_CLIP_MODEL
from gateway.settings import Settings
from gateway.wiring import build_service, limits


def test_original_env_names_are_honoured(monkeypatch):
    monkeypatch.setenv("CLIP_MODEL", "openai/clip-vit-large-patch14")
    monkeypatch.setenv("BLIP_MODEL", "Salesforce/blip-image-captioning-large")
    monkeypatch.setenv("GATEWAY_INFERENCE_MODE", "triton")
    settings = Settings(_env_file=None)
    assert (settings.clip_model, settings.blip_model, settings.inference_mode) == (
        "openai/clip-vit-large-patch14", "Salesforce/blip-image-captioning-large", "triton")


def test_defaults_and_limits_come_from_one_place():
    settings = Settings(_env_file=None, max_k=50)
    assert settings.clip_model == DEFAULT_CLIP_MODEL
    assert limits(settings).max_k == 50 and limits(settings).max_upload_bytes == settings.max_upload_bytes


def test_a_missing_model_repository_is_a_clear_error_naming_the_path_and_the_setting(tmp_path):
    import pytest

    from gateway.core.errors import ErrorKind, ServiceError

    with pytest.raises(ServiceError) as refused:
        build_service(Settings(_env_file=None, model_repository=tmp_path / "nowhere"))
    assert refused.value.kind is ErrorKind.MISCONFIGURED
    assert str(tmp_path / "nowhere") in refused.value.message and "GATEWAY_MODEL_REPOSITORY" in refused.value.message


def test_decoding_on_the_inference_tier_needs_triton_and_the_gateways_own_decoder_settings_off(tmp_path):
    import pytest

    from gateway.core.errors import ErrorKind, ServiceError

    for wrong, needs in (({"decode": "inference"}, "GATEWAY_INFERENCE_MODE=triton"),
                         ({"decode": "inference", "inference_mode": "triton", "exact_decode": True}, "GATEWAY_EXACT_DECODE")):
        with pytest.raises(ServiceError) as refused:
            build_service(Settings(_env_file=None, model_repository=tmp_path, **wrong))
        assert refused.value.kind is ErrorKind.MISCONFIGURED and needs in refused.value.message


def test_declared_filter_fields_are_read_from_json_and_checked(monkeypatch):
    import pytest

    monkeypatch.setenv("GATEWAY_FILTER_FIELDS", '{"album": "keyword", "year": "integer", "tags": "keyword_list"}')
    assert Settings(_env_file=None).filter_fields == {"album": "keyword", "year": "integer", "tags": "keyword_list"}
    for bad, problem in (({"a-b": "keyword"}, "a metadata key"), ({"album": "date"}, "Input should be"),
                         ({f"k{i}": "integer" for i in range(33)}, "at most 32")):
        with pytest.raises(ValueError, match=problem):
            Settings(_env_file=None, filter_fields=bad)
