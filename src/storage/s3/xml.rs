//! The few XML fields read by hand: an error's `Code` and `Message`, and the `ETag` of a copy
//! result, which rusty-s3 has no parser for. Everything larger (listings, multipart creation)
//! is parsed by rusty-s3.

/// The text of the first `<name>...</name>` element, entities decoded; `None` if absent.
pub fn field(doc: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = doc.find(&open)? + open.len();
    let len = doc[start..].find(&close)?;
    Some(unescape(&doc[start..start + len]))
}

/// True when the document is an S3 error (`<Error>` root): CopyObject, UploadPartCopy and
/// CompleteMultipartUpload may answer 200 and then report an error in the body.
pub fn is_error(doc: &str) -> bool {
    let body = doc
        .trim_start()
        .strip_prefix("<?xml")
        .and_then(|r| r.split_once("?>").map(|(_, rest)| rest))
        .unwrap_or(doc);
    body.trim_start().starts_with("<Error>")
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_errors() {
        let err = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                   <Message>Please &amp; reduce</Message></Error>";
        assert!(is_error(err));
        assert_eq!(field(err, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(field(err, "Message").as_deref(), Some("Please & reduce"));
        let ok = "<CopyPartResult><LastModified>x</LastModified>\
                  <ETag>&quot;abc&quot;</ETag></CopyPartResult>";
        assert!(!is_error(ok));
        assert_eq!(field(ok, "ETag").as_deref(), Some("\"abc\""));
        assert_eq!(field(ok, "Code"), None);
        assert_eq!(field("<a><Code>x", "Code"), None);
    }
}
