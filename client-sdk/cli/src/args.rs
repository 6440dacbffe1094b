//! The command line: its subcommands and their flags (clap).

use super::*;

/// A Pufa Sync field device on the command line: record legal lectures,
/// library corners and demonstration sites offline, then sync.
#[derive(Debug, Parser)]
#[command(name = "pufa", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Where this device keeps its records and settings.
    #[arg(long, env = "PUFA_DATA", global = true)]
    pub(crate) data: Option<PathBuf>,
    /// Language of prompts and messages: zh (中文) or en. Default: from LANG.
    #[arg(long, global = true)]
    pub(crate) lang: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Bind this device to a server (once).
    Enroll {
        /// The server's URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// A short enrolment code from a coordinator (XXXX-XXXX; any case,
        /// the dash optional).
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        code: Option<String>,
        /// A device token issued by an admin.
        #[arg(long)]
        token: Option<String>,
        /// This device's name on the server (with --code; default: the
        /// code's label).
        #[arg(long, requires = "code")]
        label: Option<String>,
        /// With --code on a device that is already enrolled and still has
        /// edits the server does not have: enrol anyway as a new device,
        /// keeping the old store (and those edits) aside in the data dir.
        #[arg(long, requires = "code")]
        force: bool,
    },
    /// Legal lectures (法律大讲堂).
    #[command(subcommand)]
    Lecture(AddLecture),
    /// Legal library corners (法治图书角).
    #[command(subcommand)]
    Corner(AddCorner),
    /// Rule-of-law demonstration sites (法治示范村/社区).
    #[command(subcommand)]
    Site(AddSite),
    /// Legal understanders (法律明白人): their appointments.
    #[command(subcommand)]
    Understander(AddUnderstander),
    /// List records on this device.
    List {
        /// lecture, library_corner, demo_site or legal_understander (also:
        /// corner, site, understander)
        #[arg(long)]
        kind: Option<String>,
        /// An org unit code: that unit and everything below it.
        #[arg(long)]
        org: Option<String>,
        /// From this date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Up to this date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: Option<String>,
        /// Include deleted records.
        #[arg(long)]
        deleted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one record (id or a unique prefix of it).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change fields: `pufa edit ID --attendees 90 --speaker 王律师` (an empty value clears).
    Edit {
        id: String,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "--FIELD VALUE"
        )]
        changes: Vec<String>,
    },
    /// Delete a record (it can be restored).
    Delete { id: String },
    /// Restore a deleted record.
    Restore { id: String },
    /// Push this device's records and pull everyone else's.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// What is pending, when this device last synced, its clock.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Edits the server refused, with the reason.
    Rejected {
        #[arg(long)]
        json: bool,
    },
    /// Drop a refused edit for good (its mutation id from `pufa rejected`).
    Discard { mutation: Uuid },
    /// Send a refused edit again, optionally with fixed fields: `pufa resubmit MUT --org_unit 140106001001`.
    Resubmit {
        mutation: Uuid,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "--FIELD VALUE"
        )]
        changes: Vec<String>,
    },
    /// Record many events from a CSV file (UTF-8, with or without BOM); all rows or none.
    Import {
        file: PathBuf,
        /// The kind of every row, when the file has no `kind` column.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Write the records on this device as CSV (UTF-8 with BOM, for Excel) or JSON.
    Export {
        #[arg(long, default_value = "csv")]
        format: String,
        #[arg(long)]
        kind: Option<String>,
        /// Personal fields to write too, comma-separated (`phone`): left
        /// out unless named, as in the server's exports.
        #[arg(long)]
        include: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AddLecture {
    /// Record a lecture; asks for missing fields in a terminal.
    Add(LectureFields),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AddCorner {
    /// Record a library corner; asks for missing fields in a terminal.
    Add(CornerFields),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AddSite {
    /// Record a demonstration site; asks for missing fields in a terminal.
    Add(SiteFields),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AddUnderstander {
    /// Record a legal understander's appointment; asks for missing fields
    /// in a terminal.
    Add(UnderstanderFields),
}

#[derive(Debug, Args)]
pub(crate) struct LectureFields {
    /// Org unit: code or name.
    #[arg(long)]
    pub(crate) org: Option<String>,
    #[arg(long)]
    pub(crate) held_on: Option<String>,
    #[arg(long)]
    pub(crate) title: Option<String>,
    #[arg(long)]
    pub(crate) attendees: Option<String>,
    /// Comma-separated.
    #[arg(long)]
    pub(crate) topics: Option<String>,
    #[arg(long)]
    pub(crate) speaker: Option<String>,
    #[arg(long)]
    pub(crate) venue: Option<String>,
    /// residents, villagers, students, enterprise_staff, officials, mixed
    #[arg(long)]
    pub(crate) audience: Option<String>,
    #[arg(long)]
    pub(crate) notes: Option<String>,
    /// lat,lon
    #[arg(long)]
    pub(crate) location: Option<String>,
    /// Never ask: fail if a required field is missing.
    #[arg(long)]
    pub(crate) no_input: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CornerFields {
    #[arg(long)]
    pub(crate) org: Option<String>,
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// active, inactive or closed
    #[arg(long)]
    pub(crate) status: Option<String>,
    #[arg(long)]
    pub(crate) books: Option<String>,
    #[arg(long)]
    pub(crate) opened_on: Option<String>,
    #[arg(long)]
    pub(crate) last_checked_on: Option<String>,
    #[arg(long)]
    pub(crate) notes: Option<String>,
    #[arg(long)]
    pub(crate) no_input: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SiteFields {
    #[arg(long)]
    pub(crate) org: Option<String>,
    /// national, provincial, municipal or district
    #[arg(long)]
    pub(crate) level: Option<String>,
    /// candidate, awarded or revoked
    #[arg(long)]
    pub(crate) status: Option<String>,
    #[arg(long)]
    pub(crate) year: Option<String>,
    #[arg(long)]
    pub(crate) notes: Option<String>,
    #[arg(long)]
    pub(crate) no_input: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UnderstanderFields {
    #[arg(long)]
    pub(crate) org: Option<String>,
    #[arg(long)]
    pub(crate) name: Option<String>,
    #[arg(long)]
    pub(crate) appointed_on: Option<String>,
    /// serving or resigned
    #[arg(long)]
    pub(crate) status: Option<String>,
    #[arg(long)]
    pub(crate) training_hours: Option<String>,
    /// Digits, +, - and spaces.
    #[arg(long)]
    pub(crate) phone: Option<String>,
    #[arg(long)]
    pub(crate) notes: Option<String>,
    #[arg(long)]
    pub(crate) no_input: bool,
    #[arg(long)]
    pub(crate) json: bool,
}
