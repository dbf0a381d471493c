"""Static assets of the browser preview (HTML, JavaScript, CSS); no external resources."""
