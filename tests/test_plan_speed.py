"""Plans that choose in numbers (issue 13 §3, §4): the objective ranks the configurations that
fit by the speed model's prediction, service levels filter them, `launcher fit` tables the
catalog with costs from a price file, and a plan that does not fit names every way out."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.errors import InputError
from launcher.hardware.catalog import find_gpu, load_catalog
from launcher.planner import PlanRequest
from launcher.policy import SPEED_TIE
from launcher.prepare import Target, build_plan
from launcher.prices import parse_prices
from launcher.render.fit import JSON_KEYS

EXAMPLE_PRICES = Path(__file__).resolve().parents[1] / "profiles" / "prices.example.yaml"


def _plan(model: str, gpus: str, **kw: object):
    return build_plan(model, PlanRequest(**kw), Target(gpus=gpus))  # type: ignore[arg-type]


def _fitting(p) -> list:
    return [c for c in p.candidates if c.feasible and c.predicted is not None]


# ---- the objective -----------------------------------------------------------------------

def test_throughput_and_latency_choose_different_shapes_on_eight_gpus() -> None:
    thr = _plan("deepseek-67b", "8xH100-80GB")
    lat = _plan("deepseek-67b", "8xH100-80GB", objective="latency")
    a, b = thr.chosen, lat.chosen
    assert a is not None and b is not None and a.predicted and b.predicted
    assert (a.tp, a.dp) != (b.tp, b.dp)
    # each wins on its own figure, and the other one's choice is worse there
    assert a.predicted.output_tokens_per_s > b.predicted.output_tokens_per_s
    assert b.predicted.request_latency_ms < a.predicted.request_latency_ms
    # every other fitting shape carries its prediction and why it lost, in numbers
    for c in _fitting(thr):
        if c is not a:
            assert c.rejection is not None and "output tok/s" in c.reason
    why = next(d for d in thr.decisions if d.name == "objective").reason
    assert "%" in why and why.count("×DP") >= len(_fitting(thr)) - 1


def test_deepseek_r1_on_eight_h200_is_not_pipeline_eight() -> None:
    # before issue 13 the fixed rule "fewest GPUs per replica" picked TP1 × PP8 here
    p = _plan("deepseek-r1", "8xH200-141GB")
    c = p.chosen
    assert c is not None and c.predicted is not None
    assert (c.tp, c.pp) != (1, 8) and c.tp >= 4
    pp8 = next(x for x in p.candidates if (x.tp, x.pp) == (1, 8) and x.feasible)
    assert pp8.predicted is not None
    assert c.predicted.output_tokens_per_s > pp8.predicted.output_tokens_per_s
    fits = _fitting(p)
    # speed decides only among the shapes at the longest context reached (DESIGN §4)
    assert c.max_model_len == max(x.max_model_len for x in fits)
    for x in fits:
        if x.max_model_len == c.max_model_len and x.kv_cache_dtype == c.kv_cache_dtype \
                and x is not c:  # ties aside, it is the fastest of them
            assert c.predicted.output_tokens_per_s >= \
                (1 - SPEED_TIE) * x.predicted.output_tokens_per_s
        if x.max_model_len < c.max_model_len and \
                x.predicted.output_tokens_per_s > c.predicted.output_tokens_per_s:
            assert x.rejection is not None
            assert "context comes before speed" in x.rejection.lost_note
    j = p.to_json()
    assert j["predicted"]["output_tokens_per_s"] == round(c.predicted.output_tokens_per_s, 1)


def test_service_levels_filter_and_say_by_how_much_the_best_misses() -> None:
    base = _plan("llama-3.1-8b", "8xH100-80GB")
    itls = sorted(c.predicted.basis_itl_ms for c in _fitting(base))
    assert itls[0] < itls[-1]
    limit = (itls[0] + itls[-1]) / 2
    p = _plan("llama-3.1-8b", "8xH100-80GB", max_itl_ms=limit)
    assert p.feasible and p.chosen is not None and p.chosen.predicted is not None
    assert p.chosen.predicted.basis_itl_ms <= limit
    missed = [c for c in p.candidates if c.rejection is not None
              and str(c.rejection.kind) == "slo_miss"]
    assert missed and all(c.predicted.basis_itl_ms > limit for c in missed)
    # nothing meets it: exit 3, and the reason says by how much the closest misses
    too_tight = itls[0] / 2
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "8xH100-80GB", "--max-itl-ms",
                str(too_tight), "--json")
    assert r.returncode == 3, r.stderr
    j = json.loads(r.stdout)
    assert not j["feasible"] and "--max-itl-ms" in j["reason"] and "over)" in j["reason"]
    over = float(re.search(r"\(([\d.,]+) ms over\)", j["reason"]).group(1).replace(",", ""))
    assert over > 0 and j["suggestions"]


# ---- launcher fit ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prices") / "prices.yaml"
    path.write_text(yaml.safe_dump({
        "H100-80GB": {"usd_per_gpu_hour": 2.5, "date": "2026-11-01", "source": "test"},
        "L4": {"usd_per_gpu_hour": 0.8, "date": "2026-11-01", "source": "test"}}))
    return path


@pytest.fixture(scope="module")
def fit_json(prices: Path) -> dict:
    r = run_cli("fit", "qwen2.5-7b", "--price-file", str(prices), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fit_rows_cover_the_catalog_with_the_documented_keys(fit_json: dict) -> None:
    rows = fit_json["rows"]
    assert {(r["gpu"], r["count"]) for r in rows} == {
        (g, n) for g in load_catalog() for n in (1, 2, 4, 8)}
    assert all(tuple(r) == JSON_KEYS for r in rows)
    assert fit_json["objective"] == "throughput" and fit_json["workload"]["input_len"] > 0
    fits = [r for r in rows if r["fits"]]
    assert fits and all(r["reason"] is None for r in fits)
    assert all(r["reason"] for r in rows if not r["fits"])
    # sorted: fitting rows best throughput first, then what does not fit
    flags = [r["fits"] for r in rows]
    assert flags == sorted(flags, reverse=True)
    tput = [r["output_tokens_per_s"] for r in fits if r["output_tokens_per_s"] is not None]
    assert tput == sorted(tput, reverse=True)


def test_fit_cost_is_price_times_gpus_over_tokens(fit_json: dict) -> None:
    priced = [r for r in fit_json["rows"] if r["fits"] and r["usd_per_gpu_hour"] is not None]
    assert {r["gpu"] for r in priced} == {"H100-80GB", "L4"}
    for r in priced:
        gpus = r["tensor_parallel_size"] * r["pipeline_parallel_size"] * r["data_parallel_size"]
        assert r["usd_per_hour"] == pytest.approx(r["usd_per_gpu_hour"] * gpus, rel=1e-6)
        per_m = r["usd_per_gpu_hour"] * gpus / (r["output_tokens_per_s"] * 3600) * 1e6
        assert r["usd_per_million_tokens"] == pytest.approx(per_m, rel=1e-3)
        assert r["price_date"] == "2026-11-01" and r["price_source"] == "test"
    unpriced = [r for r in fit_json["rows"] if r["gpu"] not in ("H100-80GB", "L4")]
    assert all(r["usd_per_hour"] is None for r in unpriced)


def test_fit_objective_cost_sorts_cheapest_first(prices: Path) -> None:
    r = run_cli("fit", "qwen2.5-7b", "--price-file", str(prices), "--objective", "cost",
                "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    costs = [x["usd_per_million_tokens"] for x in rows if x["fits"]
             and x["usd_per_million_tokens"] is not None]
    assert len(costs) >= 2 and costs == sorted(costs)
    first_unpriced = next(i for i, x in enumerate(rows) if x["usd_per_million_tokens"] is None)
    assert all(x["usd_per_million_tokens"] is None for x in rows[first_unpriced:])


def test_the_example_price_file_is_valid_dated_and_cited() -> None:
    p = parse_prices(yaml.safe_load(EXAMPLE_PRICES.read_text()), str(EXAMPLE_PRICES))
    assert len(p.by_gpu) >= 5
    for price in p.by_gpu.values():
        assert price.gpu in load_catalog() and price.usd_per_gpu_hour > 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", price.date) and "http" in price.source


# ---- suggestions when nothing fits ---------------------------------------------------------

def test_suggestions_name_the_headroom_and_other_gpu_types_with_numbers() -> None:
    p = _plan("gpt-oss-120b", "1xH100-80GB")
    assert not p.feasible
    text = "\n".join(p.suggestions)
    m = re.search(r"misses 80% of 1× H100-80GB by ([\d.]+) GiB per GPU: fits with "
                  r"--headroom ([\d.]+)", text)
    assert m, text
    assert 0 < float(m.group(1)) < 16
    # the headroom named is one at which it really fits here
    assert _plan("gpt-oss-120b", "1xH100-80GB", headroom=float(m.group(2))).feasible
    # another GPU type, with a count at which it really fits
    others = re.findall(r"would fit on (\d+)× ([\w-]+) at", text)
    other = [(n, g) for n, g in others if g != "H100-80GB"]
    assert other, text
    n, g = other[0]
    assert find_gpu(g) is not None and _plan("gpt-oss-120b", f"{n}x{g}").feasible
    # and more GPUs of this type
    assert ("2", "H100-80GB") in others


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "needle"), [
    ({"H100-80GB": {"date": "2026-01-01", "source": "x"}}, "usd_per_gpu_hour"),
    ({"H100-80GB": {"usd_per_gpu_hour": "cheap", "date": "2026-01-01", "source": "x"}},
     "usd_per_gpu_hour"),
    ({"H100-80GB": {"usd_per_gpu_hour": 2, "source": "x"}}, "`date`"),
    ({"H100-80GB": {"usd_per_gpu_hour": 2, "date": "2026-01-01"}}, "`source`"),
    ({"Z9000": {"usd_per_gpu_hour": 2, "date": "2026-01-01", "source": "x"}}, "'Z9000'"),
])
def test_bad_price_file_exits_2_naming_the_field(tmp_path: Path, entry: dict,
                                                 needle: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(entry))
    r = run_cli("fit", "qwen2.5-7b", "--price-file", str(path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [
    ("plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--max-itl-ms", "0"),
    ("plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--max-ttft-ms", "fast"),
    ("fit", "llama-3.1-8b", "--objective", "cost"),
    ("plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--price-file", "/nonexistent.yaml"),
])
def test_bad_speed_options_exit_2(args: tuple[str, ...]) -> None:
    r = run_cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "fix:" in r.stderr and "Traceback" not in r.stderr


_FIELDS = st.sampled_from(["usd_per_gpu_hour", "date", "source"])
_BAD = st.one_of(st.none(), st.text(max_size=8), st.booleans(),
                 st.sampled_from([-1, 0, math.nan, math.inf, "2026-13-45", [], {}]))


@settings(max_examples=150, deadline=None)
@given(field=_FIELDS, value=_BAD, gpu=st.sampled_from(["H100-80GB", "L4", "h100", "T4"]))
def test_price_parser_rejects_broken_fields_with_input_error(field: str, value: object,
                                                             gpu: str) -> None:
    entry: dict[str, object] = {"usd_per_gpu_hour": 2.0, "date": "2026-01-01",
                                "source": "https://example"}
    entry[field] = value
    try:
        p = parse_prices({gpu: entry})
    except InputError as e:
        assert field in e.message or repr(gpu) in e.message
        assert e.fix
        return
    # accepted only when the value is a sensible one for that field
    price = p.get(find_gpu(gpu).name)  # type: ignore[union-attr]
    assert price is not None and price.usd_per_gpu_hour > 0 and price.source


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=1, max_size=12))
def test_price_parser_rejects_unknown_gpus(name: str) -> None:
    entry = {"usd_per_gpu_hour": 1.0, "date": "2026-01-01", "source": "s"}
    if find_gpu(name) is not None or name in ("schema_version", "prices"):
        return
    with pytest.raises(InputError, match="not in the GPU catalog"):
        parse_prices({name: entry})


@pytest.mark.parametrize(("args", "code"), [
    (("--input-len", "200000"), 2),  # longer than Llama 3.1's 131,072
    (("--max-model-len", "8192", "--input-len", "8000", "--output-len", "500"), 2),
    (("--max-model-len", "8192", "--input-len", "7000", "--output-len", "500"), 0),
])
def test_a_workload_longer_than_the_context_is_refused(args: tuple[str, ...], code: int) -> None:
    r = run_cli("plan", "llama-3.1-8b", "--gpus", "2xH100-80GB", *args)
    assert r.returncode == code, r.stderr
    if code == 2:
        assert "--input-len" in r.stderr and "Traceback" not in r.stderr
