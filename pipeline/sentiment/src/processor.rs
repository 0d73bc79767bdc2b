//! The sentiment stage as a deterministic [`Processor`], for backtests and the embedded job: one
//! article in, its score out, scored at the simulated time (the bus worker, [`crate::worker`],
//! batches for throughput instead; a batch-invariant model gives both the same scores).

use auroraq_schemas::{AnyEvent, Article};
use auroraq_stage::{Clock, HandlerError, Processor};

use crate::assets::AliasTable;
use crate::model::Classifier;
use crate::text::prepare;
use crate::worker::score_event;

pub struct ScoreProcessor {
    classifier: Classifier,
    aliases: AliasTable,
    /// Articles with nothing to score (empty text, tokenizer failure).
    pub refused: u64,
}

impl ScoreProcessor {
    pub fn new(classifier: Classifier, aliases: AliasTable) -> Self {
        ScoreProcessor {
            classifier,
            aliases,
            refused: 0,
        }
    }

    fn score(&mut self, a: &Article, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
        let prepared = prepare(a.title.as_deref(), &a.text).map_err(|e| {
            self.refused += 1;
            HandlerError::Permanent(format!("bad_text: {e}"))
        })?;
        let enc = self.classifier.encode(&prepared.text).map_err(|e| {
            self.refused += 1;
            HandlerError::Permanent(format!("tokenize_error: {e}"))
        })?;
        let logits = self
            .classifier
            .logits(&[&enc])
            .map_err(|e| HandlerError::Transient(e.to_string()))?
            .pop()
            .ok_or_else(|| HandlerError::Transient("the model returned no logits".into()))?;
        let pred = self.classifier.predict(logits);
        let assets = self.aliases.link_article(a);
        let truncated = prepared.truncated || enc.truncated;
        let score = score_event(a, assets, &pred, &self.classifier, truncated, clock.now());
        Ok(vec![AnyEvent::SentimentScore(score)])
    }
}

impl ScoreProcessor {
    /// Scores many articles, each as [`Processor::process`] would at its time (`(article, time)`),
    /// the model run on length-sorted batches (at most `max_batch` sequences and `max_tokens`
    /// padded tokens; ties in length keep the input order, so the batches are the same every
    /// run). One result per article, in input order. `progress(done)` after each batch.
    pub fn score_many(
        &mut self,
        articles: &[(&Article, i64)],
        max_batch: usize,
        max_tokens: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Vec<Result<AnyEvent, HandlerError>> {
        let mut out: Vec<Option<Result<AnyEvent, HandlerError>>> =
            (0..articles.len()).map(|_| None).collect();
        let mut encoded = Vec::with_capacity(articles.len());
        for (i, (a, _)) in articles.iter().enumerate() {
            let prepared = match prepare(a.title.as_deref(), &a.text) {
                Ok(p) => p,
                Err(e) => {
                    self.refused += 1;
                    out[i] = Some(Err(HandlerError::Permanent(format!("bad_text: {e}"))));
                    continue;
                }
            };
            match self.classifier.encode(&prepared.text) {
                Ok(enc) => encoded.push((i, enc, prepared.truncated)),
                Err(e) => {
                    self.refused += 1;
                    out[i] = Some(Err(HandlerError::Permanent(format!("tokenize_error: {e}"))));
                }
            }
        }
        encoded.sort_by_key(|(i, e, _)| (e.ids.len(), *i));
        let mut done = articles.len() - encoded.len();
        let mut start = 0;
        while start < encoded.len() {
            let mut end = start + 1;
            while end < encoded.len()
                && end - start < max_batch.max(1)
                && (end - start + 1) * encoded[end].1.ids.len() <= max_tokens.max(1)
            {
                end += 1;
            }
            let chunk = &encoded[start..end];
            let refs: Vec<&crate::model::Encoded> = chunk.iter().map(|c| &c.1).collect();
            match self.classifier.logits(&refs) {
                Ok(logits) => {
                    for ((i, enc, text_truncated), l) in chunk.iter().zip(logits) {
                        let (a, at) = articles[*i];
                        let pred = self.classifier.predict(l);
                        let assets = self.aliases.link_article(a);
                        let score = score_event(
                            a,
                            assets,
                            &pred,
                            &self.classifier,
                            *text_truncated || enc.truncated,
                            at,
                        );
                        out[*i] = Some(Ok(AnyEvent::SentimentScore(score)));
                    }
                }
                Err(e) => {
                    for c in chunk {
                        out[c.0] = Some(Err(HandlerError::Transient(e.to_string())));
                    }
                }
            }
            done += chunk.len();
            progress(done);
            start = end;
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(HandlerError::Transient("not scored".into()))))
            .collect()
    }
}

impl Processor for ScoreProcessor {
    fn name(&self) -> &str {
        "sentiment"
    }

    fn inputs(&self) -> Vec<String> {
        vec![auroraq_bus::topics::ALL_ARTICLES.into()]
    }

    fn process(&mut self, event: &AnyEvent, clock: &dyn Clock) -> Result<Vec<AnyEvent>, HandlerError> {
        match event {
            AnyEvent::Article(a) => self.score(a, clock),
            _ => Ok(Vec::new()),
        }
    }
}
