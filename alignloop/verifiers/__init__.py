"""IFEval/IFBench instruction checkers and the accuracies computed from their verdicts."""
