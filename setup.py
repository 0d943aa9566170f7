from setuptools import find_packages, setup

setup(
    name="block-recurrent-transformer-pytorch",
    version="0.5.0",
    description="Block-Recurrent Transformer (Hutchins et al. 2022) in PyTorch: recurrent gated state, "
                "XL and compressed memories, flash attention, cached generation",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(exclude=("tests", "bench")),
    python_requires=">=3.9",
    install_requires=["torch>=2.5", "einops>=0.8", "beartype>=0.18"],
    extras_require={
        "test": ["pytest>=8", "tqdm", "matplotlib", "numpy", "colt5-attention>=0.11.2"],
        "train": ["tqdm", "matplotlib", "numpy"],
        "routed": ["colt5-attention>=0.11.2"],  # knn_retrieval="routed"
    },
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
