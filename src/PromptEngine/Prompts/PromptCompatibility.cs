using PromptEngine.Models;

namespace PromptEngine.Prompts;

/// <summary>How a prompt relates to the model it is about to be used with.</summary>
public enum PromptMatch
{
    /// <summary>The prompt's fingerprint is the model's.</summary>
    SameModel,
    /// <summary>The prompt carries no fingerprint (e.g. written by PEFT); only its width could be checked.</summary>
    NoFingerprint,
    /// <summary>The fingerprints differ and the mismatch was allowed.</summary>
    MismatchAllowed,
}

/// <summary>The outcome of an accepted <see cref="PromptCompatibility.Check(SoftPrompt, ModelFolder, bool)"/> (or its deep-prompt overload).</summary>
/// <param name="Match">What was found.</param>
/// <param name="Warning">A line to show the user when <paramref name="Match"/> is not <see cref="PromptMatch.SameModel"/>; else null.</param>
public sealed record PromptCompatibilityResult(PromptMatch Match, string? Warning);

/// <summary>A prompt that cannot (another width) or should not (another model) be used with a model.</summary>
public sealed class PromptCompatibilityException(string source, string problem, bool mismatchCanBeAllowed = false)
    : PromptEngineException($"{source}: {problem}")
{
    /// <summary>True when the prompt fits the model's shape and was only made for another model, so the caller may allow it.</summary>
    public bool MismatchCanBeAllowed { get; } = mismatchCanBeAllowed;

    /// <summary>The prompt file (or adapter folder, or bank entry) at fault.</summary>
    public string PromptSource { get; } = source;
}

/// <summary>Guards against using a prompt with a model it was not trained for. A prompt of another width
/// can never run; a prompt of the same width trained on another model runs but means nothing (or worse,
/// something misleading), so it is refused unless the caller allows a model mismatch.</summary>
public static class PromptCompatibility
{
    /// <summary>Accepts <paramref name="prompt"/> for <paramref name="model"/> or throws.</summary>
    /// <param name="prompt">The prompt; its <see cref="SoftPrompt.Source"/> names it in messages.</param>
    /// <param name="model">The model it is about to be used with.</param>
    /// <param name="allowMismatch">Accept a prompt whose fingerprint is another model's (with a warning).</param>
    /// <exception cref="PromptCompatibilityException">Another width (always), or another model's fingerprint
    /// (unless <paramref name="allowMismatch"/>); the message names the file, both fingerprints and paths,
    /// and that a mismatch can be allowed.</exception>
    public static PromptCompatibilityResult Check(SoftPrompt prompt, ModelFolder model, bool allowMismatch)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(model);
        var source = prompt.Source ?? "the prompt";
        int width = model.Config.HiddenSize;
        if (prompt.Width != width)
        {
            var madeFor = prompt.Meta(PromptMetadata.BaseModelNameOrPath) is { } name ? $" (made for {name})" : "";
            throw new PromptCompatibilityException(source,
                $"prompt width {prompt.Width}{madeFor} does not match the hidden size {width} of {model.Path}; a prompt only works on a model of its own width, and allowing a model mismatch cannot change that");
        }
        if (prompt.Meta(PromptMetadata.BaseModelWidth) is { } recorded && recorded != PromptMetadata.Invariant(width))
            throw new PromptCompatibilityException(source,
                $"the metadata says base_model_width {recorded} but the tensor is {prompt.Width} wide; the file is inconsistent");

        return CheckFingerprint(source, prompt.Meta, model, allowMismatch, $"only its width ({width})");
    }

    /// <summary>Accepts a deep prompt, whose shape its loader has checked against the model's layers and heads, for
    /// <paramref name="model"/> or throws when its fingerprint names another model (unless <paramref name="allowMismatch"/>).</summary>
    /// <exception cref="PromptCompatibilityException">Another model's fingerprint and no mismatch allowed.</exception>
    public static PromptCompatibilityResult Check(DeepPrompt prompt, ModelFolder model, bool allowMismatch)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(model);
        return CheckFingerprint(prompt.Source ?? "the deep prompt", prompt.Meta, model, allowMismatch, "only its shape");
    }

    static PromptCompatibilityResult CheckFingerprint(string source, Func<string, string?> meta, ModelFolder model, bool allowMismatch, string checkedInstead)
    {
        var theirs = meta(PromptMetadata.BaseModelFingerprint);
        if (string.IsNullOrEmpty(theirs))
            return new(PromptMatch.NoFingerprint, $"{source} records no base-model fingerprint; {checkedInstead} could be checked against {model.Path}");
        var ours = ModelFingerprint.Compute(model);
        if (theirs == ours) return new(PromptMatch.SameModel, null);

        var theirPath = meta(PromptMetadata.BaseModelNameOrPath) ?? "(not recorded)";
        var description = $"this prompt was made for another model: prompt's base model {theirPath} (fingerprint {theirs}), "
            + $"current model {PromptMetadata.NameOrPath(model)} at {model.Path} (fingerprint {ours})";
        if (!allowMismatch)
            throw new PromptCompatibilityException(source, description + ". It can be used anyway only when a model mismatch is allowed.", mismatchCanBeAllowed: true);
        return new(PromptMatch.MismatchAllowed, $"{source}: {description}; used anyway (model mismatch allowed)");
    }
}
