//! Table building and rendering (bordered on a terminal, plain `awk`-friendly columns otherwise).

use comfy_table::{Cell, Table, presets};

pub(super) fn new_table(header: &[&str], tty: bool) -> Table {
    let mut table = Table::new();
    table.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::NOTHING
    });
    table.set_header(header.iter().map(Cell::new));
    table
}

/// Renders a table; without borders, columns are separated by two spaces and lines carry no
/// leading or trailing blanks (easy to `awk`).
pub(super) fn render(mut table: Table, tty: bool) -> String {
    if tty {
        return table.to_string();
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

pub(super) fn detail_table(rows: Vec<(&str, String)>, tty: bool) -> String {
    let mut table = Table::new();
    table.load_preset(if tty {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::NOTHING
    });
    for (key, value) in rows {
        table.add_row(vec![key.to_owned(), value]);
    }
    render(table, tty)
}
