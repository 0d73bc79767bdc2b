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
