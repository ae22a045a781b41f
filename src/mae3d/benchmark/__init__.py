"""Benchmarks: a spec of datasets x methods x folds x seeds, a resumable runner (fine-tune -> predict ->
evaluate per cell), a ranked report with significance tests and plots, and the one-command demo.

Import the submodules directly (``mae3d.benchmark.spec``, ``.runner``, ``.report``, ``.demo``); this
package file stays light so that importing the spec schema does not pull in torch or nnU-Net.
"""
