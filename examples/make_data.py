"""Write data/breast_cancer.csv from scikit-learn's bundled table (no download): 569 rows,
30 numeric feature columns and a `diagnosis` column of strings, malignant or benign."""

from pathlib import Path

from sklearn.datasets import load_breast_cancer

bunch = load_breast_cancer(as_frame=True)
table = bunch.frame.drop(columns="target")
table["diagnosis"] = bunch.target_names[bunch.target]
out = Path(__file__).parent / "data" / "breast_cancer.csv"
out.parent.mkdir(exist_ok=True)
table.to_csv(out, index=False)
print(f"wrote {out}: {len(table)} rows, {table.shape[1] - 1} features")
