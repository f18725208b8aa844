"""Packaging for txflip: the package, and the twistd plugin that lives beside it."""

from setuptools import setup

setup(
    name="txflip",
    version="0.1.0",
    description="Zero-downtime restarts for Twisted servers: same sockets, no failed request.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=[
        "txflip",
        "txflip.core",
        "txflip.twistd",
        "txflip.systemd",
        "txflip.control",
        "txflip.tls",
        "txflip.acme",
        "twisted.plugins",
    ],
    package_data={"twisted.plugins": ["txflip_plugin.py", "txflip_acme_endpoints.py"]},
    install_requires=[
        "twisted[tls]>=24.3",
        "treq>=23.11",
        "acme>=2.0",
        "josepy>=1.13",
        "cryptography>=42",
        "pyopenssl>=24",
        "service-identity>=24",
    ],
    entry_points={"console_scripts": ["txflip = txflip.__main__:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Operating System :: POSIX",
    ],
)
