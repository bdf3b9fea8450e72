"""The packed Shfl-BW matrix and its file format."""

from shflbw.format.matrix import ShflBWMatrix, check_permutation

__all__ = ["ShflBWMatrix", "check_permutation"]
