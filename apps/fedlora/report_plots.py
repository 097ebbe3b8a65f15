"""Draws the PNG plots of `fedlora report`.

The fedlora binary carries this script and runs it with Debian's /usr/bin/python3 on one JSON file it wrote:
{"width_in", "height_in", "dpi", "plots": [{"file", "title", "xlabel", "ylabel", "xscale", "yscale", "x_integer",
"series": [{"label", "x", "y", "dashed", "color"}]}]}. The C++ side has read and checked the run folders and chosen
every value, label and axis scale; this script only draws. Exit status 3: matplotlib cannot be imported.
"""
import json
import sys


def main():
    if len(sys.argv) != 2:
        print("usage: report_plots.py PLOTS.json", file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        print(f"matplotlib cannot be imported: {e}", file=sys.stderr)
        return 3

    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    size = (spec["width_in"], spec["height_in"])
    dpi = spec["dpi"]
    for plot in spec["plots"]:
        fig, ax = plt.subplots(figsize=size, dpi=dpi)
        for s in plot["series"]:
            few = len(s["x"]) <= 30
            ax.plot(s["x"], s["y"], label=s["label"], color=f"C{s['color'] % 10}",
                    linestyle="--" if s["dashed"] else "-", linewidth=1.5,
                    marker="o" if few else None, markersize=3)
        ax.set_xscale(plot["xscale"])
        ax.set_yscale(plot["yscale"])
        if plot["x_integer"]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(plot["title"])
        ax.set_xlabel(plot["xlabel"])
        ax.set_ylabel(plot["ylabel"])
        ax.grid(True, which="major", alpha=0.4)
        if plot["xscale"] == "log" or plot["yscale"] == "log":
            ax.grid(True, which="minor", alpha=0.15)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(plot["file"], dpi=dpi, format="png")
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
