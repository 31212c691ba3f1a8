//! Text for people: tables with aligned columns, and `key: value` lines for one object.

use std::fmt::Display;

/// A table: a header and rows, every column as wide as its widest cell.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and no rows yet.
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns two spaces apart, no spaces at the ends of lines.
    pub fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let lines = std::iter::once(&header).chain(&self.rows);
        let mut widths = vec![0; self.header.len()];
        for line in lines.clone() {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for line in lines {
            let mut out = String::new();
            for (cell, width) in line.iter().zip(&widths) {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
            text.push_str(out.trim_end());
            text.push('\n');
        }
        text
    }
}

/// One object as `key: value` lines, the values lined up.
#[derive(Debug, Default)]
pub struct Fields {
    pairs: Vec<(&'static str, String)>,
}

impl Fields {
    /// No lines yet.
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Adds a line.
    pub fn add(&mut self, key: &'static str, value: impl Display) -> &mut Fields {
        self.pairs.push((key, value.to_string()));
        self
    }

    /// Adds a line for a value that may be absent; `-` stands for none.
    pub fn opt(&mut self, key: &'static str, value: Option<impl Display>) -> &mut Fields {
        self.add(key, or_dash(value))
    }

    /// The lines as text.
    pub fn render(&self) -> String {
        let width = self
            .pairs
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for (key, value) in &self.pairs {
            let label = format!("{key}:");
            text.push_str(format!("{label:<0$} {value}", width + 1).trim_end());
            text.push('\n');
        }
        text
    }
}

/// The value, or `-` when there is none.
pub fn or_dash(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A list of words joined by commas, or `-` when it is empty.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_titles() {
        let mut table = Table::new(&["ID", "MODEL", "STATE"]);
        table.row(vec!["1".into(), "H100 PCIe".into(), "available".into()]);
        table.row(vec!["12".into(), "L40S".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "ID  MODEL      STATE\n\
             1   H100 PCIe  available\n\
             12  L40S       -\n"
        );
    }

    #[test]
    fn fields_line_up_after_their_keys() {
        let mut fields = Fields::new();
        fields
            .add("id", 3)
            .add("state", "running")
            .opt("domain", None::<&str>);
        assert_eq!(fields.render(), "id:     3\nstate:  running\ndomain: -\n");
    }
}
