"""A bench table's figures are grouped in thousands whether they are counts or measures: a count printed 131072 in
a column of 138,240."""

from loadgen.bench.output import cell, table


def test_counts_are_grouped_in_thousands_as_measures_are():
    assert (cell(131072), cell(138240.4), cell(999), cell(True), cell(None)) == (
        "131,072",
        "138,240",
        "999",
        "True",
        "n/a",
    )
    printed = table(["measure", "value"], [["raw bytes", 131072], ["bytes held", 138240.4]])
    assert printed.splitlines()[2:] == ["raw bytes   131,072", "bytes held  138,240"]
