//! `verify.read_data`: a config value verify acts on, kept with config so config names
//! nothing above it.

/// How many blobs `verify` reads back: none (presence only), all (`--read-data`), or a
/// random share of them (`read_data = "10%"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadData {
    #[default]
    None,
    All,
    /// Hundredths of a percent, 1..=9999.
    Share(u32),
}

impl ReadData {
    /// `"10%"`, `"0.5%"`, `"100%"` or `"all"`.
    pub fn parse(text: &str) -> Result<ReadData, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(ReadData::All);
        }
        let how = "give a percentage of the blobs to read on each run, from 0.01% to 100% (e.g. \"10%\"), or \"all\"";
        let Some(number) = t.strip_suffix('%') else {
            return Err(format!("\"{text}\" is not a percentage; {how}"));
        };
        let number = number.trim();
        let valid = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && number.bytes().filter(|b| *b == b'.').count() <= 1;
        let pct: f64 = match number.parse() {
            Ok(p) if valid => p,
            _ => return Err(format!("\"{text}\" is not a percentage; {how}")),
        };
        let hundredths = (pct * 100.0).round();
        if hundredths > 10_000.0 {
            return Err(format!("\"{text}\" is more than 100%; {how}"));
        }
        if hundredths < 1.0 {
            return Err(format!(
                "\"{text}\" reads nothing; {how} (or remove the key)"
            ));
        }
        // In range 1..=10_000 by the checks above.
        let hundredths = hundredths as u32;
        Ok(if hundredths == 10_000 {
            ReadData::All
        } else {
            ReadData::Share(hundredths)
        })
    }

    /// How many of `n` blobs to read: a share rounds up, so a small backup is still read.
    pub fn count(self, n: usize) -> usize {
        match self {
            ReadData::None => 0,
            ReadData::All => n,
            ReadData::Share(h) => (n as u64 * u64::from(h)).div_ceil(10_000) as usize,
        }
    }
}

impl std::fmt::Display for ReadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadData::None => f.write_str("none"),
            ReadData::All => f.write_str("all"),
            ReadData::Share(h) if h % 100 == 0 => write!(f, "{}%", h / 100),
            ReadData::Share(h) => write!(f, "{}.{:02}%", h / 100, h % 100),
        }
    }
}
