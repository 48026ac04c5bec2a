"""The Region's stage accreditation run."""
