//! One tantivy index: the key field and the all-text field of one map, with the two
//! reads the service needs — top-k by BM25, and the score of given keys (live search).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{EnableScoring, Query, QueryParser};
use tantivy::schema::{Field, IndexRecordOption, Schema, Value, STORED, STRING, TEXT};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
    TERMINATED,
};

/// The untokenized, stored key field; queries can address it as `_key:<exact key>`.
pub const KEY_FIELD: &str = "_key";
/// The all-text field every bare query term searches.
pub const TEXT_FIELD: &str = "_all";

/// Per-map indexing memory before tantivy flushes a segment. The minimum tantivy
/// accepts: documents are small, commits are frequent, and there is one writer per map.
const WRITER_MEMORY_BYTES: usize = 15_000_000;

/// How often a one-shot search may reload the reader to pick up the segments that
/// background merges made since the last commit (see [`TextIndex::merged_searcher`]).
const MERGE_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// A tantivy index of one map.
pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    key: Field,
    text: Field,
    parser: QueryParser,
    /// When the reader was last reloaded.
    reloaded: Mutex<Instant>,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("docs", &self.num_docs())
            .finish()
    }
}

fn schema() -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let key = builder.add_text_field(KEY_FIELD, STRING | STORED);
    // TEXT = the default tokenizer (split on non-alphanumerics, drop tokens of 40+ bytes,
    // lowercase; no stemming without tantivy's "stemmer" feature) with positions, so
    // phrase queries work.
    let text = builder.add_text_field(TEXT_FIELD, TEXT);
    (builder.build(), key, text)
}

impl TextIndex {
    /// An empty index held in memory.
    pub fn in_ram() -> tantivy::Result<Self> {
        let (schema, ..) = schema();
        Self::from_index(Index::create_in_ram(schema))
    }

    /// An empty index in `folder`. Whatever the folder held before is discarded: the
    /// shards are the source of truth and every start rebuilds from them, so the folder
    /// only keeps the index out of RAM.
    pub fn in_dir(folder: &Path) -> Result<Self, std::io::Error> {
        match std::fs::remove_dir_all(folder) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(folder)?;
        let (schema, ..) = schema();
        Index::create_in_dir(folder, schema)
            .and_then(Self::from_index)
            .map_err(std::io::Error::other)
    }

    fn from_index(index: Index) -> tantivy::Result<Self> {
        let schema = index.schema();
        let key = schema.get_field(KEY_FIELD)?;
        let text = schema.get_field(TEXT_FIELD)?;
        // One indexing thread and one merge thread per map: maps are many and small,
        // and the machine has few cores.
        let options = IndexWriterOptions::builder()
            .num_worker_threads(1)
            .num_merge_threads(1)
            .memory_budget_per_thread(WRITER_MEMORY_BYTES)
            .build();
        let writer = index.writer_with_options(options)?;
        // Manual reloads: the indexer reloads right after each commit, and live search
        // must know exactly which commit a searcher reflects.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let parser = QueryParser::for_index(&index, vec![text]);
        Ok(TextIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            key,
            text,
            parser,
            reloaded: Mutex::new(Instant::now()),
        })
    }

    /// Replaces the document of `key` (visible after the next [`Self::commit`]).
    pub fn upsert(&self, key: &str, text: &str) -> tantivy::Result<()> {
        let writer = self.writer.lock();
        writer.delete_term(Term::from_field_text(self.key, key));
        let mut doc = TantivyDocument::default();
        doc.add_text(self.key, key);
        doc.add_text(self.text, text);
        writer.add_document(doc)?;
        Ok(())
    }

    /// Adds a document for `key`, which must have none (visible after the next
    /// [`Self::commit`]): an [`Self::upsert`] without the delete.
    pub fn add(&self, key: &str, text: &str) -> tantivy::Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.key, key);
        doc.add_text(self.text, text);
        self.writer.lock().add_document(doc)?;
        Ok(())
    }

    /// Removes the document of `key` (visible after the next [`Self::commit`]).
    pub fn delete(&self, key: &str) {
        self.writer
            .lock()
            .delete_term(Term::from_field_text(self.key, key));
    }

    /// Commits pending changes and makes them visible to new searchers. Blocking.
    pub fn commit(&self) -> tantivy::Result<()> {
        self.writer.lock().commit()?;
        self.reader.reload()?;
        *self.reloaded.lock() = Instant::now();
        Ok(())
    }

    /// A searcher over the last commit.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// A searcher over the last commit for a one-shot search, over merged segments when
    /// tantivy merged some since. Merges run in the background after commits and a
    /// reader sees them only once reloaded, so a map searched but rarely committed
    /// (indexed lazily) would otherwise go on searching, and holding in memory, the
    /// many small segments of its last bulk commit. A reload shows the last commit
    /// (merges keep the documents), so it is safe at any time; it is tried at most
    /// every [`MERGE_RELOAD_INTERVAL`], and only while there are segments to merge.
    pub fn merged_searcher(&self) -> Searcher {
        let searcher = self.reader.searcher();
        if searcher.segment_readers().len() <= 1 {
            return searcher;
        }
        let Some(mut reloaded) = self.reloaded.try_lock() else {
            return searcher;
        };
        if reloaded.elapsed() < MERGE_RELOAD_INTERVAL {
            return searcher;
        }
        *reloaded = Instant::now();
        drop(reloaded);
        match self.reader.reload() {
            Ok(()) => self.reader.searcher(),
            Err(error) => {
                tracing::warn!(%error, "reader reload failed");
                searcher
            }
        }
    }

    /// Documents in the last commit.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Parses `query` with tantivy's grammar over the text field. `None` for syntax
    /// errors and unknown fields: such a search has zero results, not an error (§2.2).
    pub fn parse(&self, query: &str) -> Option<Box<dyn Query>> {
        self.parser.parse_query(query).ok()
    }

    /// The `limit` best documents for `query`, best first, as (key, BM25 score).
    pub fn top(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        limit: usize,
    ) -> tantivy::Result<Vec<(String, f32)>> {
        // Never ask the collector for more slots than there are documents: the limit
        // comes from the client.
        let limit = limit.min(usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let top = searcher.search(query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            if let Some(key) = doc.get_first(self.key).and_then(|v| v.as_str()) {
                hits.push((key.to_string(), score));
            }
        }
        Ok(hits)
    }

    /// The score of each of `keys` against `query` in `searcher`, exactly as [`Self::top`]
    /// would report it; keys that do not match (or are not indexed) are absent. Costs a
    /// key lookup and a scorer seek per key, not a full search.
    pub fn score_keys<'k>(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        keys: impl IntoIterator<Item = &'k str> + Clone,
    ) -> tantivy::Result<HashMap<String, f32>> {
        let mut scores = HashMap::new();
        let weight = query.weight(EnableScoring::enabled_from_searcher(searcher))?;
        for segment in searcher.segment_readers() {
            let postings_index = segment.inverted_index(self.key)?;
            // Live doc ids of the wanted keys in this segment, ascending, because a
            // scorer only seeks forward.
            let mut targets = Vec::new();
            for key in keys.clone() {
                let term = Term::from_field_text(self.key, key);
                let Some(mut postings) =
                    postings_index.read_postings(&term, IndexRecordOption::Basic)?
                else {
                    continue;
                };
                while postings.doc() != TERMINATED {
                    let doc = postings.doc();
                    if segment
                        .alive_bitset()
                        .is_none_or(|alive| alive.is_alive(doc))
                    {
                        targets.push((doc, key));
                    }
                    postings.advance();
                }
            }
            if targets.is_empty() {
                continue;
            }
            targets.sort_unstable();
            let mut scorer = weight.scorer(segment, 1.0)?;
            for (doc, key) in targets {
                let at = if scorer.doc() < doc {
                    scorer.seek(doc)
                } else {
                    scorer.doc()
                };
                if at == doc {
                    scores.insert(key.to_string(), scorer.score());
                }
            }
        }
        Ok(scores)
    }

    /// The tantivy index, for diagnostics.
    pub fn index(&self) -> &Index {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(docs: &[(&str, &str)]) -> TextIndex {
        let index = TextIndex::in_ram().expect("ram index");
        for (key, text) in docs {
            index.upsert(key, text).expect("upsert");
        }
        index.commit().expect("commit");
        index
    }

    fn top(index: &TextIndex, query: &str, limit: usize) -> Vec<(String, f32)> {
        let Some(parsed) = index.parse(query) else {
            return Vec::new();
        };
        index
            .top(&index.searcher(), parsed.as_ref(), limit)
            .expect("search")
    }

    fn keys(hits: &[(String, f32)]) -> Vec<&str> {
        hits.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn ranks_by_bm25_and_matches_any_bare_term() {
        let index = index_with(&[
            ("a", "wireless mouse"),
            ("b", "wireless wireless keyboard"),
            ("c", "usb cable"),
            ("d", "mouse pad for a wired mouse"),
        ]);
        let hits = top(&index, "wireless mouse", 10);
        assert_eq!(keys(&hits)[0], "a", "both terms beat one: {hits:?}");
        assert_eq!(hits.len(), 3, "c matches neither term");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by score");
        assert_eq!(keys(&top(&index, "wireless mouse", 1)), vec!["a"]);
    }

    #[test]
    fn default_analyzer_lowercases_splits_and_does_not_stem() {
        let long = "x".repeat(40);
        let index = index_with(&[("a", &format!("Machine-Learning {long} running"))]);
        assert_eq!(keys(&top(&index, "MACHINE", 10)), vec!["a"]);
        assert_eq!(keys(&top(&index, "learning", 10)), vec!["a"]);
        assert!(top(&index, "run", 10).is_empty(), "no stemming");
        assert!(
            top(&index, &long, 10).is_empty(),
            "tokens of 40+ bytes are dropped"
        );
    }

    #[test]
    fn grammar_errors_and_unknown_fields_give_nothing() {
        let index = index_with(&[("a", "hello world")]);
        assert!(index.parse("title:hello").is_none());
        assert!(index.parse("hello AND (").is_none());
        assert!(top(&index, "", 10).is_empty());
        assert_eq!(keys(&top(&index, "+hello -nope", 10)), vec!["a"]);
        assert!(top(&index, "hello -world", 10).is_empty());
        assert_eq!(keys(&top(&index, "\"hello world\"", 10)), vec!["a"]);
        assert!(top(&index, "\"world hello\"", 10).is_empty());
        assert_eq!(keys(&top(&index, "_key:a", 10)), vec!["a"]);
    }

    #[test]
    fn upsert_replaces_and_delete_removes() {
        let index = index_with(&[("a", "old text"), ("b", "other")]);
        index.upsert("a", "new text").expect("upsert");
        index.delete("b");
        index.commit().expect("commit");
        assert!(top(&index, "old", 10).is_empty());
        assert_eq!(keys(&top(&index, "new", 10)), vec!["a"]);
        assert!(top(&index, "other", 10).is_empty());
        assert_eq!(index.num_docs(), 1);
    }

    #[test]
    fn add_inserts_without_replacing() {
        let index = index_with(&[]);
        index.add("a", "first").expect("add");
        index.add("b", "second").expect("add");
        index.commit().expect("commit");
        assert_eq!(keys(&top(&index, "first second", 10)).len(), 2);
        assert_eq!(index.num_docs(), 2);
    }

    #[test]
    fn scores_of_given_keys_equal_the_search_scores() {
        let index = TextIndex::in_ram().expect("ram index");
        // Several commits, so keys live in several segments, some with deleted docs.
        for round in 0..4 {
            for i in 0..25 {
                let text = format!("item {i} {} round{round}", "apple ".repeat(i % 5 + 1));
                index.upsert(&format!("k{i}"), &text).expect("upsert");
            }
            index.commit().expect("commit");
        }
        let searcher = index.searcher();
        let query = index.parse("apple round3").expect("parses");
        let all = index.top(&searcher, query.as_ref(), 100).expect("search");
        assert_eq!(all.len(), 25);
        let wanted = ["k3", "k17", "k24", "missing"];
        let scores = index
            .score_keys(&searcher, query.as_ref(), wanted)
            .expect("score");
        assert_eq!(scores.len(), 3);
        for (key, score) in &all {
            if let Some(live) = scores.get(key) {
                assert_eq!(live, score, "{key}");
            }
        }
        let none = index.parse("banana").expect("parses");
        assert!(index
            .score_keys(&searcher, none.as_ref(), wanted)
            .expect("score")
            .is_empty());
    }

    #[test]
    fn a_merged_searcher_finds_what_the_last_commit_holds() {
        let index = TextIndex::in_ram().expect("ram index");
        // One segment per commit, so there are segments to merge.
        for i in 0..12 {
            index
                .upsert(&format!("k{i}"), &format!("word number{i}"))
                .expect("upsert");
            index.commit().expect("commit");
        }
        let before = index.searcher();
        let query = index.parse("word").expect("parses");
        let expected = index.top(&before, query.as_ref(), 20).expect("search");
        std::thread::sleep(MERGE_RELOAD_INTERVAL + Duration::from_millis(50));
        let merged = index.merged_searcher();
        assert_eq!(merged.num_docs(), 12);
        let mut found = keys(&index.top(&merged, query.as_ref(), 20).expect("search"))
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        let mut wanted = keys(&expected)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        found.sort();
        wanted.sort();
        assert_eq!(found, wanted);
    }

    #[test]
    fn folder_index_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("map-x");
        {
            let index = TextIndex::in_dir(&folder).expect("open");
            index.upsert("a", "persisted").expect("upsert");
            index.commit().expect("commit");
            assert_eq!(index.num_docs(), 1);
        }
        let index = TextIndex::in_dir(&folder).expect("reopen");
        assert_eq!(index.num_docs(), 0, "rebuilt from the shards at each start");
    }
}
