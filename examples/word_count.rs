//! Word count over a bounded file: batch is a bounded stream. Counts are emitted when the input
//! ends (an event-time timer at the end of time fires on the final watermark).
//!
//!     cargo run --release --example word_count -- --input README.md
use clap::Parser;
use std::path::PathBuf;
use weir::prelude::*;

#[derive(Parser)]
#[command(about = "Count words in a text file (or a directory of them)")]
struct Cli {
    #[command(flatten)]
    weir: EnvOptions,
    /// Text file or directory.
    #[arg(long, default_value = "examples/data/words.txt")]
    input: PathBuf,
    /// Write `word,count` lines here instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Default)]
struct CountAtEnd {
    count: ValueState<u64>,
}

impl KeyedProcessFunction<String, String, (String, u64)> for CountAtEnd {
    fn open(&mut self, s: &mut StateRegistry<'_, String>) -> FnResult {
        self.count = s.value_state("count")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        _: String,
        ctx: &mut KeyedContext<'_, String>,
        _: &mut Collector<'_, (String, u64)>,
    ) -> FnResult {
        if self.count.mutate(
            ctx,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        ) == 1
        {
            ctx.register_event_time_timer(i64::MAX);
        }
        Ok(())
    }
    fn on_timer(
        &mut self,
        _: i64,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, (String, u64)>,
    ) -> FnResult {
        if let Some(c) = self.count.take(ctx) {
            out.collect((ctx.current_key().clone(), c));
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    weir::init_logging();
    let cli = Cli::parse();
    let env = StreamEnv::from_options(cli.weir)?;
    let counts = env
        .source(FileSource::text(&cli.input))
        .flat_map(|line: String| {
            line.split(|c: char| !c.is_alphanumeric() && c != '\'')
                .filter(|w| !w.is_empty())
                .map(|w| w.to_lowercase())
                .collect::<Vec<_>>()
        })
        .key_by(|w: &String| w.clone())
        .process(CountAtEnd::default());
    match &cli.output {
        Some(path) => counts.sink(FileSink::csv(path)).set_parallelism(1),
        None => counts.sink(Stdout::with(|(w, c): &(String, u64)| format!("{w} {c}"))),
    };
    env.execute("word count")?;
    Ok(())
}
