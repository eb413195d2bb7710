"""Packages: everything under tortoise_clvp, plus the repository's voices/ folder as tortoise_clvp.bundled_voices.

pyproject.toml holds the rest (metadata, dependencies, the voices/ mapping and package data); setup.py exists only
because pyproject's automatic package discovery cannot add a package that lives outside the package tree.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["tortoise_clvp", "tortoise_clvp.*"]), "tortoise_clvp.bundled_voices"])
