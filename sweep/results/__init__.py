"""The result row and what is made of rows: `row` (every column, defined once), `table`
(results.csv, written atomically), `points` (points.csv) and `hypervolume`."""
