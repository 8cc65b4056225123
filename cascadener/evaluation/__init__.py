"""Evaluation: running, scoring and reporting. The scores themselves are pure functions in
`cascadener.geic.metrics` (span P/R/F1, levels, lenient, confusion); this package feeds them.

* `saved`  — score saved prediction files against gold files, no model (`eval.py --predictions --gold`);
* `run`    — tag labelled documents with a pipeline, time it and score it;
* `suite`  — test sets (file, labels, slice, stratified sample, levels) and suite files of them
             (`eval.py --data`, `eval.py --suite`);
* `report` — the Tables 2/3-shaped text table, the JSON report and the self-contained HTML page.
"""
