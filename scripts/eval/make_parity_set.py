#!/usr/bin/env python3
"""Build the parity fixtures of `medregion eval` from the Python reference implementations.

Writes, under tests/fixtures/eval/:
  pairs.jsonl     reference/candidate pairs: report text shipped in the PyPI package `radlabels`
                  (1000 synthetic chest reports, MIT licence) with controlled edits, plus edge cases
  expected.json   per-pair and per-group scores from sacrebleu, nltk and rouge-score
  porter.json     nltk PorterStemmer() stems of every token in the pairs plus a rule-by-rule word list
  tokenize.json   sacrebleu 13a and rouge-score tokenizations of the tricky strings
  README.md       what these files are and where the text comes from
  wordnet/        the slice of the WordNet 3.0 database that METEOR's synonym stage reads for the
                  words in the pairs (same file format as the full database; see wordnet/README)

The Rust test tests/eval_parity.rs compares medregion's metrics with these numbers; it needs no
Python. Regenerate with (see scripts/eval/requirements.txt for the exact versions):

    python3 -m venv /work/venv-eval
    /work/venv-eval/bin/pip install -r scripts/eval/requirements.txt
    /work/venv-eval/bin/pip install --no-deps radlabels==0.2.0
    apt-get install wordnet-base          # WordNet 3.0 database in /usr/share/wordnet
    /work/venv-eval/bin/python scripts/eval/make_parity_set.py [--wordnet /usr/share/wordnet]

The output is deterministic (fixed seed, sorted keys).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import nltk  # noqa: E402
from nltk.corpus.reader.wordnet import WordNetCorpusReader  # noqa: E402
from nltk.stem.porter import PorterStemmer  # noqa: E402
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu  # noqa: E402
from nltk.translate.meteor_score import meteor_score  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402
from sacrebleu.metrics import BLEU  # noqa: E402
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a  # noqa: E402

SEED = 20251129
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "eval"

# WordNet 3.0 lexicographer files (lexnames(5WN)); nltk's reader needs this file, which Debian's
# wordnet-base package does not ship. medregion's reader does not read it.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------

TOK13A = Tokenizer13a()
STEMMER = PorterStemmer()
ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
ROUGE_STEM = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


class NoWordNet:
    """The wordnet object nltk's meteor gets when no WordNet database is used."""

    def synsets(self, _word):
        return []


def tok13a(text: str) -> list[str]:
    # Exactly what sacrebleu.BLEU does to a segment (lowercase=False): rstrip, then 13a.
    return TOK13A(text.rstrip()).split()


def sacre_bleu(preds: list[str], refs: list[str]) -> list[float]:
    out = []
    for n in range(1, 5):
        bleu = BLEU(max_ngram_order=n)  # defaults: 13a, smooth_method="exp", no lowercasing
        out.append(bleu.corpus_score(preds, [refs]).score / 100.0)
    return out


def nltk_bleu(preds: list[str], refs: list[str]) -> list[float]:
    hyps = [tok13a(p) for p in preds]
    lrefs = [[tok13a(r)] for r in refs]
    out = []
    for n in range(1, 5):
        out.append(float(nltk_corpus_bleu(lrefs, hyps, weights=tuple([1.0 / n] * n))))
    return out


def rouge_l(pred: str, ref: str, stem: bool) -> list[float]:
    s = (ROUGE_STEM if stem else ROUGE).score(ref, pred)["rougeL"]
    return [s.precision, s.recall, s.fmeasure]


def meteor(pred: str, ref: str, wordnet) -> float:
    return float(meteor_score([tok13a(ref)], tok13a(pred), wordnet=wordnet))


def load_wordnet(root: Path) -> WordNetCorpusReader:
    """nltk's WordNet reader on a WordNet 3.0 database directory (adds `lexnames` if missing)."""
    tmp = Path(tempfile.mkdtemp(prefix="medregion-wn-"))
    for name in os.listdir(root):
        if name.startswith(("index.", "data.")) or name.endswith(".exc") or name == "lexnames":
            shutil.copy(root / name, tmp / name)
    if not (tmp / "lexnames").exists():
        with open(tmp / "lexnames", "w") as fp:
            for i, name in enumerate(LEXNAMES):
                pos = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]
                fp.write(f"{i:02d}\t{name}\t{pos}\n")
    for name in ("index.sense", "cntlist.rev"):
        (tmp / name).touch()
    nltk.data.path.append(str(tmp))  # nltk refuses corpus roots outside its data path
    # map_wn() maps synsets from another WordNet version for the multilingual (OMW) functions;
    # it would look up the downloaded `wordnet` corpus. METEOR does not use it.
    WordNetCorpusReader.map_wn = lambda self, version="wordnet": None
    return WordNetCorpusReader(str(tmp), None)


# ---------------------------------------------------------------------------------------------
# source reports
# ---------------------------------------------------------------------------------------------


def load_reports() -> list[str]:
    spec = importlib.util.find_spec("radlabels")  # locate, do not import (it pulls in torch)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("radlabels is not installed: pip install --no-deps radlabels==0.2.0")
    root = Path(list(spec.submodule_search_locations)[0]) / "samples" / "synthetic_reports"
    texts = []
    for path in sorted(root.glob("synth_*.txt")):
        raw = path.read_text(encoding="utf-8")
        raw = re.sub(r"_{5,}", " ", raw)
        raw = raw.replace("FINAL REPORT", " ")
        texts.append(raw.strip())
    return texts


def flat(text: str) -> str:
    return " ".join(text.split())


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", flat(text))
    return [p for p in parts if p]


# ---------------------------------------------------------------------------------------------
# edits
# ---------------------------------------------------------------------------------------------

MORPH = [
    ("ies", "y"), ("y", "ies"), ("s", ""), ("", "s"), ("ed", "ing"), ("ing", "ed"),
    ("ation", "ated"), ("al", "ally"), ("ness", ""), ("ize", "ization"), ("e", "ing"),
    ("ment", "ments"), ("ity", "ities"), ("ic", "ical"),
]

NEGATE = [
    ("There is ", "There is no "), ("There are ", "There are no "), (" is ", " is not "),
    (" are ", " are not "), ("No ", ""), ("no ", ""), (" not ", " "), ("without", "with"),
    ("Normal", "Abnormal"), ("normal", "abnormal"), ("stable", "unstable"),
]

UNICODE_SNIPPETS = [
    "café naïve résumé", "ΣΊΣΥΦΟΣ ΟΔΟΣ", "肺结节 10 mm", "pleural\u00a0effusion", "thin\u2009space",
    "K\u212a kelvin", "İstanbul DİYARBAKIR", "Straße STRASSE", "µm µg", "Ⅻ ⅻ", "１２ mm",
    "e\u0301 combining", "emoji 😀 lung", "\u1680ogham\u3000ideographic", "x\x1cfoo\x1dbar\x1fz",
    "line\u2028sep\u2029para", "nel\u0085next", "ﬁbrosis ﬂuid", "ǅemal Ǆ", "ÅNGSTRÖM",
]

TOKENIZER_CASES = [
    "", " ", "a", "The heart is enlarged.", "3.5 cm nodule, 1,000 mL; 5-mm", "right-sided\nchest",
    "hyphen-\nated word", "&amp; &quot;quoted&quot; &lt;tag&gt; &amp;amp;", "<skipped> text",
    "a.b,c .5 5. ,x x, 1.2.3 a..b", "(parens) [brackets] {braces} ~tilde `tick` ^caret",
    "email@example.com http://x.y/z?q=1&r=2", "'quote' \"dq\" don't", "7-8 x-ray 10-", "--a--",
    "tab\tsep\r\nCRLF", "trailing space   ", "\u00a0\u2009", "a\u001cb\u001dc\u001ed\u001ff",
    "...", "1.", ".1", "a-", "-a", "Ⅸ. ۳.۵ ٣,٥",
] + UNICODE_SNIPPETS

PORTER_WORDS = """
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized
hopping tanned falling hissing fizzed failing filing happy sky relational conditional rational
valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli vietnamization
predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti
sensibiliti triplicate formative formalize electriciti electrical hopeful goodness revival
allowance inference airliner gyroscopic adjustable defensible irritant replacement adjustment
dependent adoption homologou communism activate angulariti homologous effective bowdlerize probate
rate cease controll roll dying lying tying skies news innings inning outings outing cannings
canning howe proceed exceed succeed generously died lied tied cried spied dies flies ied
fullness hopefulli logically analogies archaeology geology biology radiology ideology eulogy
syzygy yyy ayy yay boy toy by y ay ya yes yesterday trying buying saying playing enjoyed
agreement agreeing feeding bleed needed speeded abated abating ionization emotional fractionally
sensational national nation zation ization sized bizarre fizz buzzing misses mississippi
crying flying frying drying denying replying ivy lily ability capability visibility mobility
possibly terribly humbly nobly doubly reliability probabilities accessibility eventually
tissue tissues opacities opacity atelectasis atelectatic effusions effusion consolidation
consolidative cardiomegaly cardiomediastinal mediastinum mediastinal pneumothorax pneumothoraces
hilar hila vasculature vascular calcified calcification calcifications nodular nodules nodule
enlarged enlargement enlarging unremarkable degenerative degeneration osseous structures
intubated intubation extubated tube tubes catheter catheters positioned position positioning
ed ing s ss sss ies eed ied iing oed aed xed wed yed been seen fee bee apply applies applied
a i o u e aa ee oo ii uu ab ba abe ebb add odd egg all ill ell
""".split()


def edit_pairs(rng: random.Random, texts: list[str], wn) -> list[dict]:
    pairs: list[dict] = []
    vocab = sorted({w for t in texts for w in flat(t).split()})

    def add(kind: str, pred: str, ref: str) -> None:
        pairs.append({"id": f"{kind}-{sum(p['kind'] == kind for p in pairs):03d}",
                      "kind": kind, "pred": pred, "ref": ref})

    pool = list(range(len(texts)))
    rng.shuffle(pool)
    it = iter(pool)

    def ref_text(raw_ok: bool = False) -> str:
        t = texts[next(it)]
        return t if raw_ok and rng.random() < 0.3 else flat(t)

    for _ in range(12):
        r = ref_text(raw_ok=True)
        add("identical", r, r)
    for _ in range(30):
        r = ref_text()
        words = r.split()
        frac = rng.choice([0.05, 0.1, 0.2, 0.4, 0.7])
        keep = [w for w in words if rng.random() > frac] or words[:1]
        add("delete_words", " ".join(keep), r)
    for _ in range(20):
        r = ref_text()
        s = sentences(r)
        if len(s) > 1:
            del s[rng.randrange(len(s))]
        add("delete_sentence", " ".join(s), r)
    for _ in range(30):
        r = ref_text()
        words = r.split()
        for _k in range(rng.randint(1, max(1, len(words) // 5))):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        add("substitute", " ".join(words), r)
    for _ in range(30):
        r = ref_text()
        words = r.split()
        for i, w in enumerate(words):
            if rng.random() < 0.35:
                for old, new in rng.sample(MORPH, len(MORPH)):
                    if w.endswith(old) and len(w) > len(old) + 2:
                        words[i] = w[: len(w) - len(old)] + new
                        break
        add("morphology", " ".join(words), r)
    for _ in range(30):
        r = ref_text()
        words = r.split()
        for i, w in enumerate(words):
            core = w.strip(".,;:()").lower()
            if not core.isalpha() or rng.random() > 0.5:
                continue
            syns = sorted({l.name() for s in wn.synsets(core) for l in s.lemmas()
                           if "_" not in l.name() and l.name().isalpha()} - {core})
            if syns:
                words[i] = w.replace(w.strip(".,;:()"), rng.choice(syns))
        add("synonyms", " ".join(words), r)
    for _ in range(25):
        r = ref_text()
        s = sentences(r)
        rng.shuffle(s)
        add("reorder_sentences", " ".join(s), r)
    for _ in range(15):
        r = ref_text()
        words = r.split()
        for _k in range(max(1, len(words) // 6)):
            i = rng.randrange(max(1, len(words) - 1))
            words[i:i + 2] = words[i:i + 2][::-1]
        add("reorder_words", " ".join(words), r)
    for _ in range(30):
        r = ref_text()
        p = r
        for old, new in rng.sample(NEGATE, 3):
            p = p.replace(old, new)
        add("negation", p, r)
    for _ in range(20):
        r = ref_text()
        mode = rng.choice(["upper", "lower", "nopunct", "morepunct", "numbers"])
        if mode == "upper":
            p = r.upper()
        elif mode == "lower":
            p = r.lower()
        elif mode == "nopunct":
            p = re.sub(r"[.,;:()]", "", r)
        elif mode == "morepunct":
            p = r.replace(" ", ", ", 3).replace("-", " - ")
        else:
            p = re.sub(r"(\d+)\.(\d+)", r"\1,\2", r) + " 3.5 cm, 12-mm, 1,000 mL."
        add("case_punct", p, r)
    for _ in range(25):
        add("unrelated", ref_text(), ref_text())
    for _ in range(20):
        r = ref_text()
        words = r.split()
        add("truncate", " ".join(words[: max(1, int(len(words) * rng.uniform(0.1, 0.8)))]), r)
    for _ in range(15):
        r = ref_text()
        add("extend", r + " " + ref_text(), r)
    for _ in range(12):
        r = ref_text(raw_ok=True)
        words = r.split(" ")
        for _k in range(3):
            i = rng.randrange(len(words))
            words[i] = words[i] + " " + rng.choice(UNICODE_SNIPPETS)
        add("unicode", " ".join(words), r if rng.random() < 0.5 else r + " " + rng.choice(UNICODE_SNIPPETS))
    for s in UNICODE_SNIPPETS[:8]:
        add("unicode", s, s.lower())

    # edge cases
    some = ref_text()
    add("edge", "", some)
    add("edge", some, "")
    add("edge", "", "")
    add("edge", "   \n\t", some)
    add("edge", "Normal.", "Normal.")
    add("edge", "Normal", "Normal.")
    add("edge", some, "Normal.")
    add("edge", "normal", "NORMAL")
    add("edge", "No acute cardiopulmonary process.", "Normal.")
    add("edge", "lung", "lung")
    add("edge", "lung", "lungs")
    add("edge", "lungs", "lung")
    add("edge", "a b", "a")
    add("edge", "a", "a b")
    add("edge", "the the the the the the the", "the cat is on the mat")
    add("edge", "the heart is large", "the heart is big")
    add("edge", "the chest is clear", "the thorax is clear")
    add("edge", ". , ; :", ". , ; :")
    add("edge", "1 2 3 4 5", "1 2 3 4 5 6")
    for case in TOKENIZER_CASES:
        add("tokenizer", case, rng.choice(TOKENIZER_CASES))

    # very long reports: 25-40 reports glued together, partly shuffled
    for _ in range(4):
        r = " ".join(ref_text() for _k in range(rng.randint(25, 40)))
        s = sentences(r)
        for _k in range(len(s) // 4):
            i = rng.randrange(len(s))
            s[i] = rng.choice(s)
        rng.shuffle(s[: len(s) // 2])
        add("long", " ".join(s), r)
    return pairs


# ---------------------------------------------------------------------------------------------
# WordNet slice
# ---------------------------------------------------------------------------------------------


def read_exceptions(root: Path) -> dict[str, dict[str, list[str]]]:
    out = {}
    for pos, suffix in POS_FILES.items():
        table = {}
        for line in (root / f"{suffix}.exc").read_text().splitlines():
            terms = line.split()
            if terms:
                table[terms[0]] = terms[1:]
        out[pos] = table
    return out


def write_wordnet_slice(root: Path, wn: WordNetCorpusReader, words: set[str], out: Path) -> None:
    """Write the part of the WordNet database that wn.synsets(w) reads for every w in `words`.

    For each word and part of speech this keeps: the exception-list entry of the word, the full
    index entry of every candidate form that morphy considers (the word, its exception forms or
    its rule forms) and that the full index has, and every synset those entries point to. A
    synset line keeps its lemma names (all of them, original order except that a lemma whose
    index entry is kept comes first, which nltk needs to name the synset) and drops pointers and
    gloss; satellite adjectives are written as plain adjectives ('s' -> 'a'), which nltk needs
    because their head synset is not kept. Offsets are rewritten for the smaller files. So for
    these words `synsets()` returns the same synsets with the same lemma names as on the full
    database; the generator checks this.
    """
    exc = read_exceptions(root)
    index = wn._lemma_pos_offset_map
    keep_index: dict[str, dict[str, list[int]]] = {p: {} for p in POS_FILES}
    keep_exc: dict[str, dict[str, list[str]]] = {p: {} for p in POS_FILES}
    subs = WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS
    for word in sorted(words):
        w = word.lower()
        for pos in POS_FILES:
            if w in exc[pos]:
                keep_exc[pos][w] = exc[pos][w]
                forms = exc[pos][w]
            else:
                forms = [w[: -len(old)] + new for old, new in subs[pos] if w.endswith(old)]
            for form in [w] + forms:
                if form in index and pos in index[form]:
                    keep_index[pos][form] = list(index[form][pos])

    # synsets to keep: pos -> original offset -> lemma (index key) that reaches it first
    reach: dict[str, dict[int, str]] = {p: {} for p in POS_FILES}
    for pos in POS_FILES:
        for form in sorted(keep_index[pos]):
            for off in keep_index[pos][form]:
                reach[pos].setdefault(off, form)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    header = {}
    for pos, suffix in POS_FILES.items():
        lines = (root / f"data.{suffix}").read_bytes().split(b"\n")
        header[pos] = [ln.decode() for ln in lines if ln.startswith(b"  ")]

    for pos, suffix in POS_FILES.items():
        data_path = root / f"data.{suffix}"
        raw = data_path.read_bytes()
        new_offset = {}
        body = "".join(h + "\n" for h in header[pos])
        pos_in_file = len(body.encode())
        chunks = [body]
        for off in sorted(reach[pos]):
            end = raw.index(b"\n", off)
            line = raw[off:end].decode()
            cols = line.split("|")[0].split()
            lexnum, sstype, wcnt = cols[1], cols[2], int(cols[3], 16)
            lemmas = [(cols[4 + 2 * i], cols[5 + 2 * i]) for i in range(wcnt)]
            first = reach[pos][off]
            lemmas.sort(key=lambda lw: 0 if re.sub(r"\([^()]*\)$", "", lw[0]).lower() == first else 1)
            if sstype == "s":
                sstype = "a"
            new_offset[off] = pos_in_file
            text = f"{pos_in_file:08d} {lexnum} {sstype} {wcnt:02x} " + " ".join(
                f"{w} {lid}" for w, lid in lemmas) + " 000 | \n"
            chunks.append(text)
            pos_in_file += len(text.encode())
        (out / f"data.{suffix}").write_text("".join(chunks))
        with open(out / f"index.{suffix}", "w") as fp:
            for h in header[pos]:
                fp.write(h + "\n")
            for form in sorted(keep_index[pos]):
                offs = [new_offset[o] for o in keep_index[pos][form]]
                fp.write(f"{form} {pos} {len(offs)} 0 {len(offs)} 0 "
                         + " ".join(f"{o:08d}" for o in offs) + "  \n")
        with open(out / f"{suffix}.exc", "w") as fp:
            for form in sorted(keep_exc[pos]):
                fp.write(" ".join([form] + keep_exc[pos][form]) + "\n")
    # Synsets are found by byte offset: the files must never get their line endings converted.
    (out / ".gitattributes").write_text("* -text\n")
    with open(out / "lexnames", "w") as fp:
        for i, name in enumerate(LEXNAMES):
            p = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]
            fp.write(f"{i:02d}\t{name}\t{p}\n")
    (out / "README").write_text(
        "A slice of the WordNet 3.0 database (Princeton University), generated by\n"
        "scripts/eval/make_parity_set.py for the words of ../pairs.jsonl: the index entries,\n"
        "exception-list entries and synset lemma names that METEOR's synonym stage reads for\n"
        "those words, in the WordNet database file format (offsets rewritten, pointers and\n"
        "glosses dropped, satellite adjectives written as adjectives). Not a usable WordNet for\n"
        "anything else. The full database: `apt-get install wordnet-base` (/usr/share/wordnet).\n"
        "The licence below is the one at the top of every data and index file.\n\n"
        + "\n".join(re.sub(r"^\s*\d+\s?", "", h) for h in header["a"]) + "\n")


def fuzz_pairs(rng: random.Random, texts: list[str], n: int) -> list[dict]:
    """Random pairs mixing report words, punctuation, digits, odd whitespace and Unicode."""
    words = sorted({w for t in texts for w in flat(t).split()})
    odd = list("..,,--''\"&;:/()[]{}<>!?*+=@#$%^_`~|\\") + ["\n", "-\n", "\t", "\r", "\x1c", "\x1f",
           "\u00a0", "\u2009", "\u3000", "\u0085", "&amp;", "&quot;", "&lt;", "&gt;", "<skipped>", " . ",
           "3.5", "1,000", "5-", "-5", "x-", "İ", "Σ", "ß", "ﬁ", "K", "é", "e\u0301", "Ⅻ", "１", "😀", "中"]
    out = []
    for i in range(n):
        def text():
            k = rng.choice([0, 1, 2, 5, 10, 30, 80])
            parts = []
            for _ in range(k):
                r = rng.random()
                parts.append(rng.choice(words) if r < 0.6 else rng.choice(odd) if r < 0.9
                             else rng.choice(words).upper())
                parts.append(rng.choice([" ", " ", " ", "", "\n", "  "]))
            return "".join(parts)
        ref = text()
        pred = text() if rng.random() < 0.5 else " ".join(
            w for w in ref.split(" ") if rng.random() < 0.7) + rng.choice(["", " " + text()])
        out.append({"id": f"fuzz-{i:05d}", "kind": "fuzz", "pred": pred, "ref": ref})
    return out


def synonym_names(wn, word: str) -> list[str]:
    return sorted({l.name() for s in wn.synsets(word) for l in s.lemmas() if "_" not in l.name()})


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet", default="/usr/share/wordnet",
                    help="WordNet 3.0 database directory (Debian/Ubuntu: apt-get install wordnet-base)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--fuzz", type=int, default=0, metavar="N",
                    help="add N random pairs of adversarial text (for a stress run into another --out; "
                         "the committed fixtures use 0)")
    args = ap.parse_args()
    out = Path(args.out)
    wn_root = Path(args.wordnet)
    if not (wn_root / "data.noun").exists():
        sys.exit(f"no WordNet database in {wn_root}: apt-get install wordnet-base, or pass --wordnet DIR")
    wn = load_wordnet(wn_root)
    if wn.get_version() != "3.0":
        sys.exit(f"expected WordNet 3.0, found {wn.get_version()}")

    rng = random.Random(SEED)
    texts = load_reports()
    pairs = edit_pairs(rng, texts, wn)
    if args.fuzz:
        pairs += fuzz_pairs(random.Random(args.fuzz), texts, args.fuzz)
    ids = [p["id"] for p in pairs]
    assert len(ids) == len(set(ids))

    # words whose synsets METEOR may look up: Porter stems of the lowercased 13a tokens
    tokens = sorted({t.lower() for p in pairs for side in ("pred", "ref") for t in tok13a(p[side])})
    stems = sorted({STEMMER.stem(t) for t in tokens})
    syn_words = sorted(set(stems[:: max(1, len(stems) // 300)]) | {"larg", "big", "chest", "thorax", "enlarg"})

    slice_dir = out / "wordnet"
    write_wordnet_slice(wn_root, wn, set(stems) | set(syn_words), slice_dir)
    wn_slice = load_wordnet(slice_dir)
    for w in stems:
        full, part = synonym_names(wn, w), synonym_names(wn_slice, w)
        assert full == part, (w, full, part)

    no_wn = NoWordNet()
    per_pair = {}
    for p in pairs:
        pr, rf = p["pred"], p["ref"]
        m_full = meteor(pr, rf, wn)
        assert m_full == meteor(pr, rf, wn_slice), p["id"]
        per_pair[p["id"]] = {
            "bleu_sacrebleu": sacre_bleu([pr], [rf]),
            "bleu_nltk": nltk_bleu([pr], [rf]),
            "rouge_l": rouge_l(pr, rf, stem=False),
            "rouge_l_stem": rouge_l(pr, rf, stem=True),
            "meteor": meteor(pr, rf, no_wn),
            "meteor_wordnet": m_full,
        }

    groups = {"all": pairs}
    for p in pairs:
        groups.setdefault(p["kind"], []).append(p)
    corpus = {}
    for name, members in sorted(groups.items()):
        preds = [p["pred"] for p in members]
        refs = [p["ref"] for p in members]
        corpus[name] = {
            "ids": [p["id"] for p in members] if name != "all" else "all",
            "bleu_sacrebleu": sacre_bleu(preds, refs),
            "bleu_nltk": nltk_bleu(preds, refs),
        }

    versions = {name: importlib.metadata.version(name)
                for name in ("nltk", "sacrebleu", "rouge-score", "radlabels")}
    versions["wordnet"] = f"WordNet {wn.get_version()} ({wn_root})"
    versions["python"] = sys.version.split()[0]
    expected = {
        "generator": "scripts/eval/make_parity_set.py",
        "seed": SEED,
        "versions": versions,
        "notes": {
            "bleu_sacrebleu": "sacrebleu.metrics.BLEU(max_ngram_order=n).corpus_score(preds, [refs]).score / 100 "
                              "for n = 1..4 (13a tokenizer, smooth_method='exp', case-sensitive)",
            "bleu_nltk": "nltk corpus_bleu(weights=(1/n,)*n, no smoothing) on sacrebleu 13a tokens",
            "rouge_l": "rouge_score RougeScorer(['rougeL'], use_stemmer=False).score(ref, pred): [P, R, F]",
            "rouge_l_stem": "same with use_stemmer=True",
            "meteor": "nltk meteor_score([tok13a(ref)], tok13a(pred), wordnet=<stub with no synsets>)",
            "meteor_wordnet": "same with nltk's WordNetCorpusReader on the WordNet 3.0 database",
        },
        "pairs": per_pair,
        "corpus": corpus,
        "wordnet_synonyms": {w: synonym_names(wn, w) for w in syn_words},
    }

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as fp:
        for p in pairs:
            fp.write(json.dumps(p, ensure_ascii=False) + "\n")
    with open(out / "expected.json", "w", encoding="utf-8") as fp:
        json.dump(expected, fp, indent=1, sort_keys=True, ensure_ascii=False)
        fp.write("\n")

    porter_words = sorted(set(tokens) | set(PORTER_WORDS) | {w.upper() for w in PORTER_WORDS[:40]}
                          | {w.capitalize() for w in PORTER_WORDS[40:80]})
    # random letter strings with rule suffixes, to reach every branch of the stemmer
    suffixes = ["ational", "tional", "enci", "anci", "izer", "bli", "alli", "entli", "eli", "ousli",
                "ization", "ation", "ator", "alism", "iveness", "fulness", "ousness", "aliti",
                "iviti", "biliti", "fulli", "logi", "icate", "ative", "alize", "iciti", "ical",
                "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement",
                "ment", "ent", "sion", "tion", "ou", "ism", "ate", "iti", "ous", "ive", "ize",
                "e", "ll", "sses", "ies", "ss", "s", "eed", "ed", "ing", "at", "bl", "iz", "y", "ied"]
    letters = "abcdefghijklmnopqrstuvwxyzaeiouyy"
    for _ in range(1500):
        stem = "".join(rng.choice(letters) for _k in range(rng.randint(0, 6)))
        porter_words.append(stem + rng.choice(suffixes) + (rng.choice(suffixes) if rng.random() < 0.3 else ""))
    porter_words = sorted(set(porter_words))
    with open(out / "porter.json", "w", encoding="utf-8") as fp:
        json.dump({w: STEMMER.stem(w) for w in porter_words}, fp, indent=0, sort_keys=True, ensure_ascii=False)
        fp.write("\n")

    tok_cases = sorted(set(TOKENIZER_CASES))
    with open(out / "tokenize.json", "w", encoding="utf-8") as fp:
        json.dump([{"text": t, "tok13a": " ".join(tok13a(t)),
                    "rouge": ROUGE._tokenizer.tokenize(t),
                    "rouge_stem": ROUGE_STEM._tokenizer.tokenize(t),
                    "lower": t.lower()} for t in tok_cases], fp, indent=1, ensure_ascii=False)
        fp.write("\n")

    (out / "README.md").write_text(
        "# `medregion eval` parity fixtures\n\n"
        "Generated by `scripts/eval/make_parity_set.py` (do not edit by hand; see that script and\n"
        "the README's eval section for how to regenerate). Read by `tests/eval_parity.rs`.\n\n"
        "- `pairs.jsonl`: id, kind (the edit applied), pred, ref. The report text comes from the\n"
        f"  synthetic chest reports shipped in the PyPI package radlabels {versions['radlabels']}\n"
        "  (`radlabels/samples/synthetic_reports`, MIT licence, Copyright (c) 2026\n"
        "  Jean-Benoit Delbrouck), edited here with a fixed seed.\n"
        "- `expected.json`: the scores of the Python references (versions and exact calls inside).\n"
        "- `porter.json`: word -> nltk `PorterStemmer().stem(word)`.\n"
        "- `tokenize.json`: sacrebleu 13a and rouge-score tokenizations of corner cases.\n"
        "- `wordnet/`: the slice of WordNet 3.0 that METEOR reads for these words (see its README).\n")

    sizes = {p.name: p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    print(f"{len(pairs)} pairs, {len(groups) - 1} kinds, {len(porter_words)} stemmer words")
    for name, size in sizes.items():
        print(f"  {name:16s} {size:9d} bytes")


if __name__ == "__main__":
    main()
