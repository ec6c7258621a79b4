//! A reader of the WordNet 3.0 database files for METEOR's synonym stage, mirroring what nltk's
//! `WordNetCorpusReader.synsets(word)` returns (nltk 3.10.4, `nltk/corpus/reader/wordnet.py`).
//!
//! **How WordNet is provided.** medregion ships no WordNet. nltk normally downloads its copy from
//! a host outside the package registries; the same database (WordNet 3.0, Princeton University,
//! free licence) is packaged by Debian/Ubuntu: `apt-get install wordnet-base` puts it in
//! `/usr/share/wordnet`. Pass that directory (or nltk's unzipped `corpora/wordnet`) with
//! `medregion eval --wordnet DIR` or the environment variable [`WORDNET_ENV`]. Nothing is probed
//! implicitly: without it METEOR runs exact + stem matching only, and says so in its output.
//!
//! Files read: `index.{noun,verb,adj,adv}`, `data.{noun,verb,adj,adv}` and
//! `{noun,verb,adj,adv}.exc` (`lexnames`, which nltk also wants, is not needed). They are loaded
//! and checked once in [`WordNet::open`] (about 30 MB of text); every index offset must point at a
//! synset line of the data file, so later lookups cannot fail.
//!
//! `synsets(word)` as nltk computes it: lowercase the word; for each part of speech in nltk's
//! `POS_LIST` order (noun, verb, adjective, adverb) run `_morphy(word, pos)` — the word's
//! exception-list forms if it has an entry for that part of speech, else the forms produced by
//! each suffix rule that applies (`MORPHOLOGICAL_SUBSTITUTIONS`), in both cases preceded by the
//! word itself and kept only if the index has them for that part of speech — and collect the
//! synsets of every such form. A lemma name is the word of the synset line without its
//! syntactic marker (`(a)`, `(p)`, `(ip)`), case kept.

use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::hash::FxHashMap;
use crate::{Error, Result};

/// Environment variable naming a WordNet database directory.
pub const WORDNET_ENV: &str = "MEDREGION_WORDNET";

/// A part of speech, in nltk's `POS_LIST` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pos {
    Noun = 0,
    Verb = 1,
    Adj = 2,
    Adv = 3,
}

impl Pos {
    /// nltk's `POS_LIST`.
    pub const ALL: [Pos; 4] = [Pos::Noun, Pos::Verb, Pos::Adj, Pos::Adv];

    /// The file suffix (`index.noun`, `noun.exc`, ...).
    pub fn file(self) -> &'static str {
        ["noun", "verb", "adj", "adv"][self as usize]
    }

    /// The one-letter tag of the index files.
    pub fn tag(self) -> &'static str {
        ["n", "v", "a", "r"][self as usize]
    }

    /// nltk's `MORPHOLOGICAL_SUBSTITUTIONS[pos]`, in order.
    fn substitutions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Pos::Noun => &[
                ("s", ""),
                ("ses", "s"),
                ("ves", "f"),
                ("xes", "x"),
                ("zes", "z"),
                ("ches", "ch"),
                ("shes", "sh"),
                ("men", "man"),
                ("ies", "y"),
            ],
            Pos::Verb => &[
                ("s", ""),
                ("ies", "y"),
                ("es", "e"),
                ("es", ""),
                ("ed", "e"),
                ("ed", ""),
                ("ing", "e"),
                ("ing", ""),
            ],
            Pos::Adj => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
            Pos::Adv => &[],
        }
    }
}

/// A WordNet database loaded in memory.
pub struct WordNet {
    root: PathBuf,
    /// lemma → synset offsets per part of speech (`_lemma_pos_offset_map`).
    index: FxHashMap<String, [Vec<u32>; 4]>,
    /// inflected form → base forms, per part of speech (`_exception_map`).
    exceptions: [FxHashMap<String, Vec<String>>; 4],
    /// (part of speech, offset) → lemma names of the synset.
    synsets: FxHashMap<(Pos, u32), Box<[Box<str>]>>,
}

impl std::fmt::Debug for WordNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordNet")
            .field("root", &self.root)
            .field("lemmas", &self.index.len())
            .field("synsets", &self.synsets.len())
            .finish()
    }
}

impl WordNet {
    /// Loads the database in `dir` (a WordNet 3.0 `dict` directory).
    pub fn open(dir: impl AsRef<Path>) -> Result<WordNet> {
        let root = dir.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::invalid(
                "wordnet",
                format!(
                    "{} is not a directory (a WordNet database: index.noun, data.noun, ...)",
                    root.display()
                ),
            ));
        }
        let mut wn = WordNet {
            root: root.clone(),
            index: FxHashMap::default(),
            exceptions: Default::default(),
            synsets: FxHashMap::default(),
        };
        for pos in Pos::ALL {
            let data_path = root.join(format!("data.{}", pos.file()));
            let data = std::fs::read(&data_path).map_err(|e| Error::io(&data_path, e))?;
            let index_path = root.join(format!("index.{}", pos.file()));
            let index = read_text(&index_path)?;
            wn.load_index(pos, &index, &index_path, &data, &data_path)?;
            let exc_path = root.join(format!("{}.exc", pos.file()));
            let exc = read_text(&exc_path)?;
            for line in exc.lines() {
                let mut terms = line.split_ascii_whitespace();
                if let Some(form) = terms.next() {
                    wn.exceptions[pos as usize].insert(form.to_string(), terms.map(str::to_string).collect());
                }
            }
        }
        Ok(wn)
    }

    /// The database named by [`WORDNET_ENV`], if that variable is set and not empty.
    pub fn from_env() -> Result<Option<WordNet>> {
        match std::env::var_os(WORDNET_ENV) {
            Some(dir) if !dir.is_empty() => WordNet::open(PathBuf::from(dir)).map(Some),
            _ => Ok(None),
        }
    }

    /// The directory this database was loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn load_index(&mut self, pos: Pos, text: &str, path: &Path, data: &[u8], data_path: &Path) -> Result<()> {
        for (lineno, line) in text.lines().enumerate() {
            // The licence header lines start with spaces.
            if line.starts_with(' ') || line.is_empty() {
                continue;
            }
            let what = || format!("{}:{}", path.display(), lineno + 1);
            let bad = |reason: &str| Error::format(what(), reason.to_string());
            let mut tok = line.split_ascii_whitespace();
            let lemma = tok.next().ok_or_else(|| bad("empty line"))?;
            let _pos = tok.next().ok_or_else(|| bad("missing part of speech"))?;
            let mut num = |name: &str| -> Result<usize> {
                tok.next()
                    .and_then(|t| t.parse::<usize>().ok())
                    .ok_or_else(|| bad(&format!("missing or bad {name}")))
            };
            let n_synsets = num("synset_cnt")?;
            let n_pointers = num("p_cnt")?;
            for _ in 0..n_pointers {
                tok.next().ok_or_else(|| bad("missing pointer symbol"))?;
            }
            let n_senses = tok.next().and_then(|t| t.parse::<usize>().ok());
            if n_synsets == 0 || n_senses != Some(n_synsets) {
                return Err(bad("synset_cnt must be positive and equal sense_cnt"));
            }
            tok.next().ok_or_else(|| bad("missing tagsense_cnt"))?;
            let mut offsets = Vec::with_capacity(n_synsets);
            for _ in 0..n_synsets {
                let off = tok
                    .next()
                    .and_then(|t| t.parse::<u32>().ok())
                    .ok_or_else(|| bad("missing or bad synset offset"))?;
                if let Entry::Vacant(slot) = self.synsets.entry((pos, off)) {
                    let names = parse_synset(data, off).map_err(|reason| {
                        Error::format(
                            format!("{} (offset {off} from {})", data_path.display(), what()),
                            reason,
                        )
                    })?;
                    slot.insert(names);
                }
                offsets.push(off);
            }
            let entry = self.index.entry(lemma.to_string()).or_default();
            entry[pos as usize] = offsets;
        }
        Ok(())
    }

    fn has(&self, form: &str, pos: Pos) -> bool {
        self.index.get(form).is_some_and(|e| !e[pos as usize].is_empty())
    }

    /// nltk's `_morphy(form, pos, check_exceptions=True)`: the base forms of `form` that the
    /// index has for `pos`, in nltk's order, without duplicates.
    pub fn morphy(&self, form: &str, pos: Pos) -> Vec<String> {
        let mut candidates: Vec<String> = vec![form.to_string()];
        if let Some(forms) = self.exceptions[pos as usize].get(form) {
            candidates.extend(forms.iter().cloned());
        } else {
            for &(old, new) in pos.substitutions() {
                if let Some(stem) = form.strip_suffix(old) {
                    candidates.push(format!("{stem}{new}"));
                }
            }
        }
        let mut seen = HashSet::new();
        candidates.into_iter().filter(|f| self.has(f, pos) && seen.insert(f.clone())).collect()
    }

    /// nltk's `synsets(word)`: (part of speech, offset) of each synset, in nltk's order
    /// (duplicates kept, as nltk keeps them).
    pub fn synsets(&self, word: &str) -> Vec<(Pos, u32)> {
        let lemma = word.to_lowercase();
        let mut out = Vec::new();
        for pos in Pos::ALL {
            for form in self.morphy(&lemma, pos) {
                if let Some(entry) = self.index.get(&form) {
                    out.extend(entry[pos as usize].iter().map(|&off| (pos, off)));
                }
            }
        }
        out
    }

    /// The lemma names of a synset (`synset.lemma_names()`); empty for an unknown synset.
    pub fn lemma_names(&self, pos: Pos, offset: u32) -> &[Box<str>] {
        self.synsets.get(&(pos, offset)).map(|b| &b[..]).unwrap_or(&[])
    }

    /// The candidate words METEOR's synonym stage gets for `word`: every lemma name of every
    /// synset of `word` that contains no `_` (multi-word lemmas), sorted, without duplicates.
    /// (METEOR adds the word itself.)
    pub fn synonyms(&self, word: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .synsets(word)
            .into_iter()
            .flat_map(|(pos, off)| self.lemma_names(pos, off).iter())
            .filter(|n| !n.contains('_'))
            .map(|n| n.to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| Error::format(path.display().to_string(), format!("not UTF-8: {e}")))
}

/// Parses the synset line at byte `offset` of a data file into its lemma names, as nltk's
/// `synset_from_pos_and_offset` + `_synset_from_pos_and_line` do.
fn parse_synset(data: &[u8], offset: u32) -> std::result::Result<Box<[Box<str>]>, String> {
    let start = offset as usize;
    if start >= data.len() || (start > 0 && data[start - 1] != b'\n') {
        return Err("no synset line starts at this offset".to_string());
    }
    let end = data[start..].iter().position(|&b| b == b'\n').map_or(data.len(), |p| start + p);
    let line = std::str::from_utf8(&data[start..end]).map_err(|_| "synset line is not UTF-8".to_string())?;
    // nltk accepts the line only if it starts with the offset, zero-padded to 8 digits.
    if line.get(..8) != Some(format!("{offset:08}").as_str()) {
        return Err("the line at this offset does not start with the offset".to_string());
    }
    let columns = line.split('|').next().unwrap_or("");
    let mut tok = columns.split_ascii_whitespace();
    let _offset = tok.next();
    let _lexname = tok.next().ok_or("missing lex_filenum")?;
    let _ss_type = tok.next().ok_or("missing ss_type")?;
    let w_cnt = tok.next().and_then(|t| usize::from_str_radix(t, 16).ok()).ok_or("missing or bad w_cnt")?;
    let mut names = Vec::with_capacity(w_cnt);
    for _ in 0..w_cnt {
        let word = tok.next().ok_or("fewer words than w_cnt")?;
        tok.next().ok_or("missing lex_id")?;
        names.push(strip_marker(word).into());
    }
    Ok(names.into_boxed_slice())
}

/// Removes a trailing syntactic marker: nltk's `re.match(r"(.*?)(\([^()]*\))?$", name)`.
fn strip_marker(word: &str) -> &str {
    if let Some(body) = word.strip_suffix(')') {
        if let Some(open) = body.rfind('(') {
            if !body[open + 1..].contains(')') {
                return &word[..open];
            }
        }
    }
    word
}

#[cfg(test)]
mod tests {
    use super::strip_marker;

    #[test]
    fn markers() {
        assert_eq!(strip_marker("galore(ip)"), "galore");
        assert_eq!(strip_marker("big"), "big");
        assert_eq!(strip_marker("a(b)c"), "a(b)c");
        assert_eq!(strip_marker("(a)"), "");
    }
}
