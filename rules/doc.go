// Package rules reads rules.yaml and decides, for a domain event, which
// WeChat subscribe messages to send to whom and with which words.
//
// Parse (or Load) turns a file into a Set, checking everything that can be
// checked before an event arrives: unknown fields, missing and misspelt
// references, template syntax and functions, `when` expressions, literal
// keyword values against their WeChat type, policies. It returns every
// problem at once, as an ErrorList of positioned *Error values.
//
// For an event, Set.Match returns the rules whose `on` pattern matches its
// type and whose `when` condition holds; Rule.Recipients resolves whom a
// rule names (as specs: user ids, roles within a scope, openids);
// Rule.Render renders the page and keyword data and fits each value to its
// keyword type (Fit), so that what the bridge sends passes WeChat's
// checks, or fails with a *DataError that names the keyword. Rule.Preview
// does all of it at once with every problem, for `wxbridge rules render`.
//
// Apps are Mini Programs or official accounts (服务号). A rule sends one
// template, or lists several with via: Rule.Channels gives them in the
// order they are tried, Template.Channel says how each reaches a person
// (subscribe message, subscription notification, template message), and
// Rule.RenderFor renders the rule for one of them, with what that API
// takes (page; or web url and Mini Program page).
//
// Policies (quiet hours, dedupe, frequency cap, delivery) are parsed and
// exposed on Rule.Policy; the bridge enforces them.
//
// Rendering a value and evaluating a condition run within limits
// (MaxValueBytes, MaxIterations, MaxWorkBytes, MaxEvalTime): one over a
// limit is a *DataError, so no event can make a rule run away. Error
// messages quote event data shortened.
//
// The package is pure: no network, no database, and no clock but the one
// behind MaxEvalTime. A Set is immutable once parsed and safe for
// concurrent use. docs/rules.md is the operators' guide to the language.
package rules
