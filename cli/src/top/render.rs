//! Drawing one frame from the [`App`] state: header, nodes, processes,
//! selected-process detail (CPU history, threads), migration log, and the
//! node picker on top. Pure with respect to the state, so it renders the
//! same on a terminal and on ratatui's `TestBackend` (`--once`, tests).

use super::format::{clock, date_time, kib, percent, rate, rtt};
use super::state::{by_figure, measured, tracing_of, App};
use crate::show::process_state;
use popcorn_proto::control::{Health, ProcessStateKind};
use popcorn_proto::monitor::{ClusterView, NodeView, ProcessFigures};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Sparkline, Table, TableState,
};
use ratatui::{Frame, Terminal};
use unicode_width::UnicodeWidthStr;

/// The keys, as `?` shows them.
pub const HELP: &str = "q/Esc quit · ↑↓ j/k select · Enter threads · s sort (cpu, faults, pid, node) · r reverse · m migrate · ? help";

/// Rows of the detail area under the processes table.
const DETAIL_ROWS: u16 = 9;
const DETAIL_ROWS_THREADS: u16 = 15;

const DIM: Style = Style::new().fg(Color::DarkGray);
const WARN: Style = Style::new().fg(Color::Yellow);
const ERROR: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);

/// The screen as plain text lines of at most `width` columns, trailing
/// spaces trimmed (for `--once` and tests).
pub fn to_text(
    app: &App,
    interval_ms: Option<u64>,
    width: u16,
    height: u16,
) -> anyhow::Result<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height))?;
    terminal.draw(|frame| draw(frame, app, interval_ms))?;
    Ok(buffer_text(terminal.backend().buffer()))
}

fn buffer_text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in buf.area.top()..buf.area.bottom() {
        let mut line = String::new();
        let mut hidden = 0;
        for x in buf.area.left()..buf.area.right() {
            // A wide character hides the cells after it.
            if hidden > 0 {
                hidden -= 1;
                continue;
            }
            let symbol = buf.cell((x, y)).map_or(" ", |c| c.symbol());
            hidden = symbol.width().saturating_sub(1);
            line.push_str(symbol);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Draws the whole screen; `interval_ms` is `None` for a one-off screen.
pub fn draw(frame: &mut Frame, app: &App, interval_ms: Option<u64>) {
    let header = header_lines(app, interval_ms);
    let Some(view) = app.view() else {
        let mut lines = header;
        lines.push(Line::from(""));
        lines.push(Line::styled("waiting for the agent…", DIM));
        frame.render_widget(Paragraph::new(lines), frame.area());
        return;
    };
    let nodes_rows = view.nodes.len().min(11) as u16 + 3;
    let detail_rows = if app.show_threads() {
        DETAIL_ROWS_THREADS
    } else {
        DETAIL_ROWS
    };
    let [head, nodes, procs, detail] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Length(nodes_rows),
        Constraint::Min(4),
        Constraint::Length(detail_rows),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header), head);
    draw_nodes(frame, app, view, nodes);
    draw_processes(frame, app, view, procs);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(detail);
    if app.show_threads() {
        let [spark, threads] =
            Layout::vertical([Constraint::Length(DETAIL_ROWS), Constraint::Min(3)]).areas(left);
        draw_cpu_history(frame, app, view, spark);
        draw_threads(frame, app, view, threads);
    } else {
        draw_cpu_history(frame, app, view, left);
    }
    draw_migrations(frame, view, right);
    draw_picker(frame, app, view);
}

fn header_lines(app: &App, interval_ms: Option<u64>) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let arrow = match (app.sort().label(), app.reversed()) {
        ("pid" | "node", false) | ("cpu" | "faults", true) => "↑",
        _ => "↓",
    };
    let mut first = vec![Span::styled("popcorn top", HEADER)];
    if let Some(v) = app.view() {
        first.push(Span::raw(format!(
            " · node {} · {} · {} nodes, {} processes",
            v.node,
            date_time(v.at_unix_ms),
            v.nodes.len(),
            v.processes.len()
        )));
    }
    let live = interval_ms.map_or(String::new(), |ms| format!(" · every {ms} ms"));
    let help = if interval_ms.is_some() {
        " · ? help"
    } else {
        ""
    };
    first.push(Span::styled(
        format!("{live} · sort {} {arrow}{help}", app.sort().label()),
        DIM,
    ));
    lines.push(Line::from(first));
    for (node, reason) in app.tracing_off() {
        lines.push(Line::styled(
            format!("tracing off on node {node}: {reason} (its CPU% and FLT/s show -)"),
            WARN,
        ));
    }
    if let Some(e) = app.fetch_error() {
        let shown = app
            .view()
            .map(|v| format!(", showing the view of {}", clock(v.at_unix_ms)))
            .unwrap_or_default();
        let retry = interval_ms.map_or(String::new(), |ms| format!("retrying every {ms} ms"));
        lines.push(Line::styled(
            format!("agent unreachable ({retry}{shown}): {e}"),
            ERROR,
        ));
    }
    if app.help() {
        lines.push(Line::raw(HELP));
    } else if let Some(s) = app.status() {
        lines.push(Line::styled(
            s.text.clone(),
            if s.error { ERROR } else { Style::new() },
        ));
    }
    lines
}

fn right(s: impl Into<String>) -> Cell<'static> {
    Cell::from(Text::from(s.into()).alignment(Alignment::Right))
}

fn dash() -> Cell<'static> {
    right("-")
}

fn node_row(app: &App, view: &ClusterView, n: &NodeView, bars: usize) -> Row<'static> {
    let s = &n.status;
    let (health, health_style) = match s.health {
        Health::Local => ("local", Style::new().fg(Color::Cyan)),
        Health::Up => ("up", Style::new().fg(Color::Green)),
        Health::Down => ("DOWN", ERROR),
    };
    let mut cells = vec![
        Cell::from(s.name.clone()),
        Cell::from(s.isa.to_string()),
        Cell::from(Span::styled(health, health_style)),
        match (s.health, s.rtt_us) {
            (Health::Up, Some(us)) => right(rtt(us)),
            _ => dash(),
        },
    ];
    match &n.report {
        Some(r) => {
            let m = &r.machine;
            let procs = view
                .processes
                .iter()
                .filter(|p| p.info.node == s.name && p.info.state != ProcessStateKind::Exited)
                .count();
            cells.extend([
                right(format!("{:.2}", m.load1)),
                right(percent(m.cpu_busy_percent)),
                right(format!(
                    "{}/{}",
                    kib(m.mem_total_kib.saturating_sub(m.mem_available_kib)),
                    kib(m.mem_total_kib)
                )),
                right(rate(r.dsm.pages_in_per_s)),
                right(rate(r.dsm.pages_out_per_s)),
                right(procs.to_string()),
            ]);
        }
        None => cells.extend((0..6).map(|_| dash())),
    }
    let history = app
        .node_history(&s.name)
        .map(|h| h.bars(bars, 100.0))
        .unwrap_or_default();
    cells.push(Cell::from(Span::styled(
        history,
        Style::new().fg(Color::Green),
    )));
    let row = Row::new(cells);
    if s.health == Health::Down {
        row.style(DIM)
    } else {
        row
    }
}

fn draw_nodes(frame: &mut Frame, app: &App, view: &ClusterView, area: Rect) {
    let name_w = view
        .nodes
        .iter()
        .map(|n| n.status.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4) as u16;
    let widths = [
        Constraint::Length(name_w),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(13),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(5),
    ];
    // The history takes what the figures leave (columns are 1 apart).
    let fixed: u16 = widths
        .iter()
        .map(|c| match c {
            Constraint::Length(n) => n + 1,
            _ => 1,
        })
        .sum();
    let bars = area.width.saturating_sub(2 + fixed).clamp(8, 60);
    let widths = widths.into_iter().chain([Constraint::Length(bars)]);
    let bars = bars as usize;
    let header = Row::new(vec![
        Cell::from("NODE"),
        Cell::from("ISA"),
        Cell::from("HEALTH"),
        right("RTT"),
        right("LOAD"),
        right("CPU%"),
        right("MEM USED"),
        right("DSM IN/s"),
        right("DSM OUT/s"),
        right("PROCS"),
        Cell::from("CPU BUSY HISTORY"),
    ])
    .style(HEADER);
    let rows: Vec<Row> = view
        .nodes
        .iter()
        .map(|n| node_row(app, view, n, bars))
        .collect();
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" nodes "));
    frame.render_widget(table, area);
}

fn process_row(view: &ClusterView, p: &ProcessFigures) -> Row<'static> {
    let i = &p.info;
    let known = measured(view, p);
    let figure = |v: f64, f: fn(f64) -> String| if known { right(f(v)) } else { dash() };
    // DSM figures come from the agent itself, not from tracing.
    let reported = i.state != ProcessStateKind::Exited && tracing_of(view, &i.node).is_some();
    let dsm = |v: f64| if reported { right(rate(v)) } else { dash() };
    let row = Row::new(vec![
        right(i.pid.to_string()),
        Cell::from(i.node.clone()),
        Cell::from(i.origin.clone()),
        Cell::from(process_state(i)),
        right(i.threads.to_string()),
        figure(p.cpu_percent, percent),
        figure(p.faults_per_s, rate),
        dsm(p.dsm.remote_faults_per_s),
        dsm(p.dsm.pages_in_per_s),
        dsm(p.dsm.pages_out_per_s),
        Cell::from(i.argv.join(" ")),
    ]);
    if i.state == ProcessStateKind::Exited {
        row.style(DIM)
    } else {
        row
    }
}

fn draw_processes(frame: &mut Frame, app: &App, view: &ClusterView, area: Rect) {
    let rows = app.rows();
    let name_w = rows
        .iter()
        .flat_map(|p| [p.info.node.chars().count(), p.info.origin.chars().count()])
        .max()
        .unwrap_or(0)
        .max(6) as u16;
    let widths = [
        Constraint::Length(7),
        Constraint::Length(name_w),
        Constraint::Length(name_w),
        Constraint::Length(14),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let header = Row::new(vec![
        right("PID"),
        Cell::from("NODE"),
        Cell::from("ORIGIN"),
        Cell::from("STATE"),
        right("THR"),
        right("CPU%"),
        right("FLT/s"),
        right("RFLT/s"),
        right("IN/s"),
        right("OUT/s"),
        Cell::from("COMMAND"),
    ])
    .style(HEADER);
    let title = format!(" processes ({}) ", rows.len());
    let table = Table::new(
        rows.iter()
            .map(|p| process_row(view, p))
            .collect::<Vec<_>>(),
        widths,
    )
    .header(header)
    .row_highlight_style(SELECTED)
    .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_cpu_history(frame: &mut Frame, app: &App, view: &ClusterView, area: Rect) {
    let Some(p) = app.selected_process() else {
        let block = Block::bordered().title(" CPU history ");
        frame.render_widget(
            Paragraph::new(Line::styled("no process selected", DIM)).block(block),
            area,
        );
        return;
    };
    let pid = p.info.pid;
    let history = app.process_history(pid);
    if !measured(view, p) {
        let why = match tracing_of(view, &p.info.node) {
            _ if p.info.state == ProcessStateKind::Exited => "it has exited".to_string(),
            None => format!("node {} did not report", p.info.node),
            Some(_) => format!("tracing is off on node {}", p.info.node),
        };
        let block = Block::bordered().title(format!(" CPU % of {pid} "));
        frame.render_widget(
            Paragraph::new(Line::styled(format!("not measured: {why}"), DIM)).block(block),
            area,
        );
        return;
    }
    let (now, max) = history.map_or((0.0, 0.0), |h| (h.latest().unwrap_or(0.0), h.max()));
    let title = format!(
        " CPU % of {pid} on {} (now {}, max {}) ",
        p.info.node,
        percent(now),
        percent(max)
    );
    let block = Block::bordered().title(title);
    let width = block.inner(area).width as usize;
    let data = history.map(|h| h.tail_u64(width)).unwrap_or_default();
    let spark = Sparkline::default()
        .block(block)
        .data(data)
        .max(max.max(100.0).round() as u64)
        .style(Style::new().fg(Color::Cyan));
    frame.render_widget(spark, area);
}

fn draw_threads(frame: &mut Frame, app: &App, view: &ClusterView, area: Rect) {
    let Some(p) = app.selected_process() else {
        frame.render_widget(Block::bordered().title(" threads "), area);
        return;
    };
    let block = Block::bordered().title(format!(" threads of {} ", p.info.pid));
    if p.thread_figures.is_empty() || !measured(view, p) {
        frame.render_widget(
            Paragraph::new(Line::styled(
                "no per-thread figures (tracing off, or not measured)",
                DIM,
            ))
            .block(block),
            area,
        );
        return;
    }
    let mut threads: Vec<_> = p.thread_figures.iter().collect();
    threads.sort_by(|a, b| by_figure(b.cpu_percent, a.cpu_percent).then(a.tid.cmp(&b.tid)));
    let rows: Vec<Row> = threads
        .iter()
        .map(|t| {
            Row::new(vec![
                right(t.tid.to_string()),
                right(percent(t.cpu_percent)),
                right(rate(t.faults_per_s)),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(vec![right("TID"), right("CPU%"), right("FLT/s")]).style(HEADER))
    .block(block);
    frame.render_widget(table, area);
}

fn draw_migrations(frame: &mut Frame, view: &ClusterView, area: Rect) {
    let block = Block::bordered().title(" recent migrations ");
    let fit = block.inner(area).height as usize;
    let lines: Vec<Line> = if view.migrations.is_empty() {
        vec![Line::styled("none yet", DIM)]
    } else {
        view.migrations
            .iter()
            .rev()
            .take(fit)
            .map(|m| {
                Line::raw(format!(
                    "{}  pid {:<7} {}→{}  downtime {:.2} ms  {} pages",
                    clock(m.at_unix_ms),
                    m.pid,
                    m.from,
                    m.to,
                    m.downtime_us as f64 / 1000.0,
                    m.pages_at_origin
                ))
            })
            .collect()
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_picker(frame: &mut Frame, app: &App, view: &ClusterView) {
    let Some(picker) = app.picker() else {
        return;
    };
    let items: Vec<ListItem> = picker
        .candidates
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let detail = view
                .nodes
                .iter()
                .find(|n| &n.status.name == name)
                .map(|n| {
                    let link = match (n.status.health, n.status.rtt_us) {
                        (Health::Local, _) => "local".to_string(),
                        (_, Some(us)) => rtt(us),
                        _ => "up".to_string(),
                    };
                    format!("{}, {link}", n.status.isa)
                })
                .unwrap_or_default();
            ListItem::new(format!("{}  {name}  ({detail})", i + 1))
        })
        .collect();
    let width = 48.min(frame.area().width);
    let height = (picker.candidates.len() as u16 + 3).min(frame.area().height);
    let area = frame.area();
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let list = List::new(items)
        .block(
            Block::bordered()
                .title(format!(" move {} from {} to… ", picker.pid, picker.from))
                .title_bottom(" ↑↓ Enter or 1-9 · Esc cancels "),
        )
        .highlight_style(SELECTED);
    let mut state = ListState::default().with_selected(Some(picker.selected));
    frame.render_widget(Clear, popup);
    frame.render_stateful_widget(list, popup, &mut state);
}

#[cfg(test)]
mod tests {
    use super::super::state::tests::{process, view};
    use super::super::state::Key;
    use super::*;
    use popcorn_proto::monitor::TracingStatus;

    fn screen(app: &App) -> String {
        to_text(app, Some(1000), 160, 48).unwrap()
    }

    fn app_with(v: ClusterView) -> App {
        let mut app = App::new();
        app.update(v);
        app
    }

    fn sample() -> ClusterView {
        view(vec![
            process(10, "a", 5.0, 100.0),
            process(11, "b", 50.0, 1.0),
        ])
    }

    /// The cells of the processes-table row of `pid`.
    fn row_of(text: &str, pid: i32) -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| *w != "│")
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.first().map(String::as_str) == Some(&pid.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn a_process_on_node_b_shows_b_in_its_row() {
        let text = screen(&app_with(sample()));
        let row = row_of(&text, 11);
        assert_eq!(
            row,
            vec![
                "11", "b", "a", "running", "2", "50.0", "1.0", "3.0", "4.0", "5.0", "app11",
                "--work"
            ],
            "{text}"
        );
        assert_eq!(row_of(&text, 10).get(1).map(String::as_str), Some("a"));
        assert!(text.contains("PID"), "{text}");
        assert!(text.contains("COMMAND"), "{text}");
        assert!(text.contains("processes (2)"), "{text}");
        assert!(text.contains("2023-11-14 22:13:20 UTC"), "{text}");
        // No line is wider than the screen and none ends in a space.
        for l in text.lines() {
            assert!(l.chars().count() <= 160);
            assert_eq!(l, l.trim_end());
        }
        assert_eq!(text.lines().count(), 48);
    }

    #[test]
    fn nodes_table_shows_figures_and_down_nodes() {
        let text = screen(&app_with(sample()));
        let b = text.lines().find(|l| l.contains("│b ")).unwrap_or_default();
        assert!(b.contains("x86_64") && b.contains("up"), "{b}");
        assert!(b.contains("120 µs") && b.contains("40.0"), "{b}");
        assert!(b.contains("2.0G/8.0G"), "{b}");
        let c = text.lines().find(|l| l.contains("│c ")).unwrap_or_default();
        assert!(c.contains("DOWN"), "{c}");
        assert!(c.contains(" - "), "{c}");
    }

    #[test]
    fn tracing_off_is_said_and_its_figures_are_dashes() {
        let mut v = sample();
        if let Some(r) = v.nodes[1].report.as_mut() {
            r.tracing = TracingStatus {
                enabled: false,
                reason: Some("no BTF in this kernel".into()),
            };
        }
        let mut app = app_with(v);
        app.on_key(Key::Down);
        let text = screen(&app);
        assert!(
            text.contains("tracing off on node b: no BTF in this kernel"),
            "{text}"
        );
        let row = row_of(&text, 11);
        assert_eq!(&row[5..10], ["-", "-", "3.0", "4.0", "5.0"], "{text}");
        assert_eq!(row_of(&text, 10)[5], "5.0");
        assert!(
            text.contains("not measured: tracing is off on node b"),
            "{text}"
        );
    }

    #[test]
    fn migration_log_line_appears() {
        let text = screen(&app_with(sample()));
        let line = text
            .lines()
            .find(|l| l.contains("pid 11"))
            .unwrap_or_default();
        assert!(line.contains("22:13:10"), "{line}");
        assert!(line.contains("a→b"), "{line}");
        assert!(line.contains("downtime 12.34 ms"), "{line}");
        assert!(line.contains("567 pages"), "{line}");
        assert!(text.contains("recent migrations"));
        let mut v = sample();
        v.migrations.clear();
        assert!(screen(&app_with(v)).contains("none yet"));
    }

    #[test]
    fn threads_panel_appears_after_enter() {
        let mut app = app_with(sample());
        let before = screen(&app);
        assert!(!before.contains("threads of 11"), "{before}");
        assert!(
            before.contains("CPU % of 11 on b (now 50.0, max 50.0)"),
            "{before}"
        );
        app.on_key(Key::Enter);
        let after = screen(&app);
        assert!(after.contains("threads of 11"), "{after}");
        assert!(after.contains("TID"), "{after}");
        let t = after
            .lines()
            .find(|l| l.contains("│      12"))
            .unwrap_or_default();
        assert!(t.contains("25.0"), "{after}");
    }

    #[test]
    fn threads_panel_explains_missing_figures() {
        let mut v = sample();
        v.processes[1].thread_figures.clear();
        let mut app = app_with(v);
        app.on_key(Key::Enter);
        assert!(screen(&app).contains("no per-thread figures"));
    }

    #[test]
    fn picker_pops_up_over_the_tables() {
        let mut app = app_with(sample());
        app.on_key(Key::Char('m'));
        let text = screen(&app);
        assert!(text.contains("move 11 from b to…"), "{text}");
        assert!(text.contains("1  a  (x86_64, local)"), "{text}");
        assert!(!text.contains("2  c"), "{text}");
    }

    #[test]
    fn status_help_and_unreachable_agent_show_in_the_header() {
        let mut app = App::new();
        app.fetch_failed("no popcorn agent is running for node 'a'".into());
        let text = screen(&app);
        assert!(text.contains("waiting for the agent"), "{text}");
        assert!(text
            .contains("agent unreachable (retrying every 1000 ms): no popcorn agent is running"));
        app.update(sample());
        app.fetch_failed("connection refused".into());
        let text = screen(&app);
        assert!(text.contains("showing the view of 22:13:20"), "{text}");
        assert!(text.contains("processes (2)"));
        app.migration_done(11, "a", Err("node a refused".into()));
        assert!(screen(&app).contains("migrating process 11 to a failed: node a refused"));
        app.on_key(Key::Char('?'));
        assert!(screen(&app).contains("q/Esc quit"));
    }

    #[test]
    fn small_screens_do_not_panic() {
        let mut app = app_with(sample());
        app.on_key(Key::Enter);
        app.on_key(Key::Char('m'));
        for (w, h) in [(40, 10), (1, 1), (200, 12), (80, 24)] {
            assert!(to_text(&app, Some(1000), w, h).is_ok());
        }
    }

    #[test]
    fn wide_characters_do_not_shift_the_line() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 6, 1));
        buf.set_string(0, 0, "名x", Style::new());
        assert_eq!(buffer_text(&buf), "名x\n");
    }
}
