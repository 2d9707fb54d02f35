//! TEMPORARY STUB — replaced by the real module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}
impl TableName {
    pub fn parse(text: &str) -> Result<TableName, String> {
        Ok(TableName {
            schema: None,
            name: text.to_string(),
        })
    }
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.name == name && self.schema.as_deref().is_none_or(|s| s == schema)
    }
}
impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub include: Vec<TableName>,
    pub exclude: Vec<TableName>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub list: String,
    pub tables: Vec<String>,
    pub skipped: Vec<String>,
    pub unmatched: Vec<String>,
}
pub fn filter(list: &str, _schema_sql: &str, _sel: &Selection) -> Filtered {
    Filtered {
        list: list.to_string(),
        tables: vec![],
        skipped: vec![],
        unmatched: vec![],
    }
}
