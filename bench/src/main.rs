//! `topgun-bench`: runs one scenario, prints its report, writes JSON / Markdown if asked,
//! and exits non-zero when any request failed (unless `--allow-errors`).

use clap::Parser;
use std::process::ExitCode;
use topgun_bench::cli::Cli;
use topgun_bench::scenarios::{self, Ctx};

/// Exit status when requests failed.
const EXIT_FAILURES: u8 = 1;
/// Exit status when the run could not be done at all.
const EXIT_FATAL: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("topgun-bench: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let name = cli.scenario.name();
    let result = runtime.block_on(async {
        let ctx = Ctx::from_args(&cli.common)?;
        scenarios::run(&ctx, &cli.scenario, &cli.common.pids).await
    });
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("topgun-bench {name}: FATAL: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    if let Some(label) = &cli.common.label {
        report.label = label.clone();
    }
    print!("{}", report.to_markdown());
    for note in &report.notes {
        eprintln!("topgun-bench {name}: note: {note}");
    }
    if let Some(path) = &cli.common.json {
        if let Err(e) = report.write_json(path) {
            eprintln!("topgun-bench {name}: cannot write the JSON report: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    }
    if let Some(path) = &cli.common.markdown {
        if let Err(e) = report.append_markdown(path) {
            eprintln!("topgun-bench {name}: cannot append the Markdown report: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    }
    if report.passed {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "topgun-bench {name}: FAILED: {} request(s) failed:",
        report.failure_count
    );
    for f in &report.failures {
        eprintln!("  {} × {} — e.g. {}", f.count, f.kind, f.example);
    }
    if cli.common.allow_errors {
        eprintln!("topgun-bench {name}: --allow-errors given, exiting 0");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURES)
    }
}
