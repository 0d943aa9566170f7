from setuptools import find_packages, setup

# knn_backend="faiss": memorizing-transformers-pytorch's KNNMemory, whose own requirements are listed
# here because it is installed apart, with --no-deps (it declares faiss-gpu, ~1.2 GB of CUDA
# libraries, where faiss-cpu serves; and imports einops_exts without declaring it):
#   pip install "block-recurrent-transformer-pytorch[faiss]"
#   pip install --no-deps memorizing-transformers-pytorch==0.4.1
# save_pretrained / from_pretrained write safetensors; data/prepare.py trains a byte-level BPE tokenizer
HUB = ["safetensors>=0.4"]
TOKENIZE = ["tokenizers>=0.19", "numpy", "tqdm"]
FAISS = ["faiss-cpu>=1.7.3", "einops-exts>=0.0.4", "joblib", "filelock", "numpy"]
# bench/quality.py's peer, pinned to the version every recorded comparison ran (its tests build and train it)
PEER = ["x-transformers==2.31.10"]

setup(
    name="block-recurrent-transformer-pytorch",
    version="0.5.0",
    description="Block-Recurrent Transformer (Hutchins et al. 2022) in PyTorch: recurrent gated state, "
                "XL and compressed memories, flash attention, cached generation",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=("block_recurrent_transformer_pytorch", "block_recurrent_transformer_pytorch.*")),
    python_requires=">=3.9",
    install_requires=["torch>=2.5", "einops>=0.8", "beartype>=0.18"],
    extras_require={
        "test": ["pytest>=8", "tqdm", "matplotlib", "numpy", "colt5-attention>=0.11.2", *FAISS, *HUB, *TOKENIZE, *PEER],
        "train": ["tqdm", "matplotlib", "numpy", *HUB, *TOKENIZE],
        "hub": HUB,  # model.save_pretrained / from_pretrained (model.safetensors + config.json)
        "tokenize": TOKENIZE,  # data/prepare.py --tokenizer bpe, and train.py on its token files
        "routed": ["colt5-attention>=0.11.2"],  # knn_retrieval="routed"
        "faiss": FAISS,  # knn_backend="faiss"
    },
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
