"""What a bundle holds unless told otherwise: the wheels, the files left out, the node's packages.

Standard library only: the harness's command line reads these for its `bundle build` options
without importing the build side.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PART_SIZE = 50 * 2**20
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness-bundle" / "wheels"

#: manylinux tags that pip matches exactly: 2_17 to 2_39 cover every x86-64 wheel of today.
DEFAULT_PLATFORMS: tuple[str, ...] = tuple(f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")

#: Files of the vLLM wheel that a dense model on an H100 never loads (fnmatch patterns, relative to
#: the site tree). Extension modules built for other Python versions are dropped by a rule of their
#: own (``unpack.other_python_extension``).
DEFAULT_DROP: tuple[str, ...] = (
    # FlashAttention 2 kernels (191 MB): Hopper runs FlashAttention 3 (_vllm_fa3_C, kept); the
    # import is guarded and sets FA2_AVAILABLE = False.
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
    # Mixture-of-experts kernels (38 MB): `import vllm._moe_C` is wrapped in suppress(ImportError)
    # and only MoE models call torch.ops._moe_C.
    "vllm/_moe_C.abi3.so",
    # The Rust HTTP frontend (36 MB, 0.22.0 and later): used only with VLLM_USE_RUST_FRONTEND=1.
    "vllm/vllm-rs",
)

#: The dependency wheels a dense-model engine imports and the H100/H200 image lacks. Unpinned names
#: take vLLM's own specifier (and those of the other bundled wheels). xgrammar 0.2.8 needs a newer
#: apache-tvm-ffi than vLLM's pin (0.1.9), so that pin is overridden on purpose.
DEFAULT_DEPS: tuple[str, ...] = (
    "annotated-types", "astor", "blake3", "cachetools", "cbor2", "depyf", "dill", "diskcache",
    "fastapi", "gguf", "lark", "llguidance", "msgspec", "openai", "openai-harmony",
    "opentelemetry-api", "partial-json-parser", "pybase64", "pydantic", "pydantic-core", "pyzmq",
    "setproctitle", "sniffio", "starlette", "typing-inspection",
    "xgrammar==0.2.8", "apache-tvm-ffi==0.1.15.post2",
)

#: The harness's own requirements that the node lacks (pure Python).
HARNESS_DEPS: tuple[str, ...] = ("junitparser",)

#: Python distributions of the device image ('cuda'), as listed in the device notes (KINDS.md,
#: read 2026-11-17). Requirements on these are not bundled; their versions are checked on install.
TARGET_PRESENT: tuple[str, ...] = tuple("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
