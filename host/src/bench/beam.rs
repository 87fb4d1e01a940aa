//! BEAM in the same sitting (`--beam SCRIPT`): Erlang/OTP runs the baseline script
//! (`../shared/reference/beam/beam_baseline.escript`) with this run's sizes right after Agora's
//! benchmarks, and each Agora figure it has an equal for is printed again next to BEAM's. Machines of
//! this kind differ by up to 2.5× in speed, so only figures from one sitting compare.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::Report;

/// What the script printed.
#[derive(Debug, PartialEq)]
struct Beam {
    spawn_micros: f64,
    process_bytes: f64,
    messages_per_second: f64,
    calls_per_second: f64,
}

/// Run the script (`escript` from Debian's `erlang-nox`): `spawns` idle processes, `pairs`
/// pairs doing `rounds` request/reply round trips, 200,000 `gen_server:call`s.
pub(super) fn beam(script: &Path, spawns: usize, pairs: usize, rounds: u64, report: &Report) -> anyhow::Result<()> {
    let output = Command::new("escript")
        .arg(script)
        .args([spawns.to_string(), pairs.to_string(), rounds.to_string()])
        .output()
        .context("running escript (Debian's erlang-nox; `make bench-beam` installs it)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}): {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let beam = parse(&stdout).with_context(|| format!("reading what {} printed:\n{stdout}", script.display()))?;
    report.figure("beam_spawn", beam.spawn_micros, "us", None, &format!("(mean of {spawns} spawns)"));
    report.figure("beam_process_memory", beam.process_bytes, "bytes", None, "(per idle process)");
    report.figure("beam_messaging", beam.messages_per_second, "msgs/s", None, &format!("({pairs} pairs x {rounds})"));
    report.figure("beam_call", beam.calls_per_second, "calls/s", None, "(gen_server:call, one server)");
    let against = [
        ("messaging", beam.messages_per_second, "msgs/s", "the same pairs and round trips"),
        ("call", beam.calls_per_second, "calls/s", "gen_server:call"),
        ("spawn_p50", beam.spawn_micros, "us", "BEAM's mean spawn"),
        ("spawn_warm_p50", beam.spawn_micros, "us", "BEAM's mean spawn"),
    ];
    for (name, theirs, unit, what) in against {
        if let Some(ours) = report.recorded(name) {
            let note = format!("(Agora's {name} next to BEAM's, {what}: {:.2}x)", ours / theirs);
            report.figure(&format!("{name}_vs_beam"), ours, unit, Some(theirs), &note);
        }
    }
    Ok(())
}

fn parse(stdout: &str) -> anyhow::Result<Beam> {
    // "erlang spawn: 100000 processes, 3.612 us/spawn, 2697 bytes/process" and the like: the
    // number before each unit.
    let number_before = |line: &str, unit: &str| -> anyhow::Result<f64> {
        let before = line.split(unit).next().filter(|_| line.contains(unit)).context(unit.to_string())?;
        let number = before.rsplit([' ', ',']).find(|token| !token.is_empty()).context(unit.to_string())?;
        number.parse::<f64>().with_context(|| format!("{number:?} before {unit}"))
    };
    let line =
        |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix)).with_context(|| format!("no {prefix:?} line"));
    let spawn = line("erlang spawn:")?;
    Ok(Beam {
        spawn_micros: number_before(spawn, " us/spawn")?,
        process_bytes: number_before(spawn, " bytes/process")?,
        messages_per_second: number_before(line("erlang msgs:")?, " messages/s")?,
        calls_per_second: number_before(line("erlang call:")?, " calls/s")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_lines_are_read_and_a_missing_one_is_an_error() {
        let printed = "erlang spawn: 100000 processes, 3.612 us/spawn, 2697 bytes/process\n\
                       erlang msgs: 1000 pairs x 1000 round trips, 812345.6 messages/s\n\
                       erlang call: 200000 gen_server calls, 301234.5 calls/s\n";
        let beam = parse(printed).unwrap();
        assert_eq!(
            beam,
            Beam {
                spawn_micros: 3.612,
                process_bytes: 2697.0,
                messages_per_second: 812345.6,
                calls_per_second: 301234.5
            }
        );
        let error = parse(&printed.replace("erlang call", "erlang cal")).unwrap_err();
        assert!(error.to_string().contains("erlang call:"), "{error}");
    }
}
