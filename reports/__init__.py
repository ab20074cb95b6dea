"""Figures, tables and the HTML report of a study (`catlab report STUDY`, `make report`, `make figures`).

Reads only what analysis and the registry wrote (studies/<study>/*.csv, samples.pt, study.json), MLflow run
ids and statuses; never a checkpoint. Writes reports/out/<study>/ (git-ignored).

    data.py             the study's tables, its arms and what each axis sets (StudyData)
    compare.py          per-arm summaries (summary.csv or recomputed) and the paired tests as arm pairs
    style.py            Agg, seaborn paper context, Type-42 fonts, one colour per arm, metric labels
    figures_diag.py     fig4 (diagnostics per stage), fig6 (model size), fig7 (discriminators)
    figures_train.py    fig5 (FID per scale over training), drift, the lambda sweep, the stage-weight heatmap
    figures_samples.py  fig8 (per-stage samples, arms side by side, the same (z, y))
    tables.py           Markdown / LaTeX (booktabs) / HTML tables: mean +- CI, best in bold, dagger for p < 0.05
    html.py             index.html
    build.py            report(study, figures_only=False, profile="cpu") -> 0
"""
