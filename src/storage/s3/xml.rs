//! The few XML fields read by hand: an error's `Code` and `Message`, the `ETag` of a copy
//! result, which rusty-s3 has no parser for, and the failures of a DeleteObjects (whose
//! `DeleteResult` root rusty-s3 accepts only in one spelling of its namespace, and which some
//! servers send with no body at all). Everything larger (listings, multipart creation) is
//! parsed by rusty-s3.

/// The text of the first `<name>...</name>` element, entities decoded; `None` if absent.
pub fn field(doc: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = doc.find(&open)? + open.len();
    let len = doc[start..].find(&close)?;
    Some(unescape(&doc[start..start + len]))
}

/// The inner text of each `<name>...</name>` element, in order (not nested in one another).
pub fn elements<'a>(doc: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(len) = body.find(&close) else {
            break;
        };
        out.push(&body[..len]);
        rest = &body[len + close.len()..];
    }
    out
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
        let deleted = "<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01\">\
                       <Error><Key>a</Key><Code>NoSuchKey</Code></Error>\
                       <Error><Key>b</Key><Code>AccessDenied</Code></Error></DeleteResult>";
        let errors = elements(deleted, "Error");
        assert_eq!(errors.len(), 2);
        assert_eq!(field(errors[1], "Key").as_deref(), Some("b"));
        assert!(elements("<DeleteResult/>", "Error").is_empty());
    }
}
