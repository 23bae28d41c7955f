// conference.html → the page at "/", keeping the query string and fragment (an external file:
// the Content-Security-Policy allows no inline script).
location.replace(`./${location.search}${location.hash}`);
